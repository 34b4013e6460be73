"""mergekit configurations as mergekit's own typed objects (``MergeConfiguration``, ``InputModelDefinition``).

**What t means** (mergekit issue #70): in SLERP ``t`` is the weight of the *other* model: ``t = 0`` returns
``base_model`` (here the instruct model), ``t = 1`` the CPT model. A list of t values is a gradient over the layers
(layer ``i`` of ``L`` gets the value at ``i / (L - 1)``; embeddings, final norm and LM head get the first value);
``filters`` give tensors whose name contains a key (``self_attn``, ``mlp``) their own t.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergekit.common import ModelPath, ModelReference
from mergekit.config import ConditionalParameter, InputModelDefinition, MergeConfiguration
from mergekit.tokenizer.config import TokenizerConfig

METHODS = ("slerp", "linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della",
           "model_stock")
TASK_VECTOR_METHODS = ("task_arithmetic", "ties", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della")
SPARSIFYING_METHODS = ("ties", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della")
DTYPES = ("float32", "bfloat16", "float16")

Model = str | Path
T = float | Sequence[float]


class MergeError(ValueError):
    """A merge that cannot run as configured."""


def reference(model: Model) -> ModelReference:
    """mergekit's reference to a local folder or hub id (spelled out, so '+' and '@' in paths stay literal)."""
    return ModelReference(model=ModelPath(path=str(model)))


def _check_t(value: T, what: str) -> float | list[float]:
    values = list(value) if isinstance(value, list | tuple) else [value]
    if isinstance(value, list | tuple) and len(values) < 2:
        raise MergeError(f"{what} {value!r}: a gradient needs at least 2 values (a single value: pass a number)")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
            raise MergeError(f"{what} {value!r}: each t must be a number in [0, 1] (0 = base model, 1 = the other model)")
    return [float(v) for v in values] if isinstance(value, list | tuple) else float(value)


def _finish(config: dict[str, Any], dtype: str, tokenizer_source: str | None) -> MergeConfiguration:
    if dtype not in DTYPES:
        raise MergeError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if tokenizer_source not in (None, "base", "union"):
        raise MergeError(f"tokenizer_source {tokenizer_source!r} is not 'base', 'union' or None")
    tokenizer = TokenizerConfig(source=tokenizer_source) if tokenizer_source else None
    return MergeConfiguration(**config, dtype=dtype, tokenizer=tokenizer)


def slerp_config(base: Model, other: Model, t: T = 0.5, *, filters: Mapping[str, T] | None = None,
                 dtype: str = "float32", tokenizer_source: str | None = None) -> MergeConfiguration:
    """SLERP of ``other`` into ``base``: t=0 returns base, t=1 returns other; ``t`` may be a per-layer gradient.
    ``filters`` maps a tensor-name part to its own t (the first match wins), e.g. ``{"self_attn": [0, 0.5, 1]}``."""
    value = _check_t(t, "t")
    setting: Any = value
    if filters:
        setting = [ConditionalParameter(filter=str(k), value=_check_t(v, f"filters[{k!r}]")) for k, v in filters.items()]
        setting.append(ConditionalParameter(value=value))
    return _finish({"merge_method": "slerp", "base_model": reference(base),
                    "models": [InputModelDefinition(model=reference(base)), InputModelDefinition(model=reference(other))],
                    "parameters": {"t": setting}}, dtype, tokenizer_source)


def linear_config(models: Sequence[Model], weights: Sequence[float] | None = None, *, base: Model | None = None,
                  normalize: bool = True, dtype: str = "float32",
                  tokenizer_source: str | None = None) -> MergeConfiguration:
    """Weighted average of ``models`` (``normalize``: divide by the sum of weights). ``base`` (default: the first
    model) fixes the output config and tokenizer; list it among ``models`` to average it in."""
    if len(models) < 2:
        raise MergeError("linear needs at least two models")
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise MergeError(f"linear: {len(weights)} weights for {len(models)} models")
    if normalize and abs(sum(weights)) < 1e-12:
        raise MergeError("linear: the weights sum to 0, so normalize=True would divide by zero")
    return _finish({"merge_method": "linear", "base_model": reference(base if base is not None else models[0]),
                    "models": [InputModelDefinition(model=reference(m), parameters={"weight": w})
                               for m, w in zip(models, weights, strict=True)],
                    "parameters": {"normalize": bool(normalize)}}, dtype, tokenizer_source)


def task_vector_config(base: Model, models: Sequence[Model], *, method: str = "task_arithmetic",
                       weights: Sequence[float] | None = None, density: float | None = None,
                       gamma: float | None = None, epsilon: float | None = None, scale: float | None = None,
                       normalize: bool | None = None, dtype: str = "float32",
                       tokenizer_source: str | None = None) -> MergeConfiguration:
    """Task-vector merges (``base + Σ weight·(model − base)``, sparsified and sign-elected by the method).
    ``density`` = share of each task vector kept, ``gamma`` = share of the largest outliers dropped (breadcrumbs),
    ``epsilon`` (della), ``scale`` = mergekit's lambda; None = mergekit's default."""
    if method not in TASK_VECTOR_METHODS:
        raise MergeError(f"method {method!r} is not a task-vector method ({', '.join(TASK_VECTOR_METHODS)})")
    if not models:
        raise MergeError(f"{method} needs at least one model besides the base")
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise MergeError(f"{method}: {len(weights)} weights for {len(models)} models")
    if density is not None and not 0.0 < density <= 1.0:
        raise MergeError(f"density {density} must be in (0, 1]")
    per_model: dict[str, float] = {}
    if density is not None and method in SPARSIFYING_METHODS:
        per_model["density"] = float(density)
    if gamma is not None and method.startswith("breadcrumbs"):
        per_model["gamma"] = float(gamma)
    if epsilon is not None and method == "della":
        per_model["epsilon"] = float(epsilon)
    shared = {k: v for k, v in (("lambda", scale), ("normalize", normalize)) if v is not None}
    return _finish({"merge_method": method, "base_model": reference(base),
                    "models": [InputModelDefinition(model=reference(m), parameters={"weight": w, **per_model})
                               for m, w in zip(models, weights, strict=True)],
                    "parameters": shared or None}, dtype, tokenizer_source)


def model_stock_config(base: Model, models: Sequence[Model], *, filter_wise: bool = False, dtype: str = "float32",
                       tokenizer_source: str | None = None) -> MergeConfiguration:
    """Model Stock: averages at least two fine-tuned models and moves towards the base by their angle."""
    if len(models) < 2:
        raise MergeError("model_stock needs the base and at least two fine-tuned models")
    return _finish({"merge_method": "model_stock", "base_model": reference(base),
                    "models": [InputModelDefinition(model=reference(m)) for m in models],
                    "parameters": {"filter_wise": bool(filter_wise)}}, dtype, tokenizer_source)


def _linear_shares(t: T, weights: Sequence[float] | None, others: int) -> list[float] | None:
    """Shares like SLERP's t: one other model gets t and the base 1 - t; with several, ``weights`` are the others'
    shares and the base gets the rest (None: all models equal)."""
    if weights is None and others == 1:
        if isinstance(t, list | tuple):
            raise MergeError("linear takes a scalar t; per-layer gradients are for slerp")
        share = _check_t(t, "t")
        return [1.0 - share, share]
    if weights is None:
        return None
    if len(weights) != others:
        raise MergeError(f"linear: {len(weights)} weights for {others} models besides the base")
    if sum(weights) > 1.0 + 1e-9:
        raise MergeError(f"linear: the shares {list(weights)} of the other models sum to more than 1; the base gets "
                         "1 - their sum")
    return [1.0 - sum(weights), *weights]


def build_config(method: str, base: Model, models: Sequence[Model], *, t: T = 0.5,
                 filters: Mapping[str, T] | None = None, weights: Sequence[float] | None = None,
                 density: float | None = None, gamma: float | None = None, epsilon: float | None = None,
                 scale: float | None = None, normalize: bool | None = None, dtype: str = "float32",
                 tokenizer_source: str | None = None) -> MergeConfiguration:
    """One mergekit config for ``method`` with ``base`` as base_model and ``models`` the others (CPT first)."""
    models = list(models)
    common = {"dtype": dtype, "tokenizer_source": tokenizer_source}
    if method == "slerp":
        if len(models) != 1:
            raise MergeError(f"slerp merges exactly two models: the base and one other, got {len(models)} others")
        return slerp_config(base, models[0], t, filters=filters, **common)
    if method == "linear":
        return linear_config([base, *models], _linear_shares(t, weights, len(models)), base=base,
                             normalize=True if normalize is None else normalize, **common)
    if method in TASK_VECTOR_METHODS:
        return task_vector_config(base, models, method=method, weights=weights, density=density, gamma=gamma,
                                  epsilon=epsilon, scale=scale, normalize=normalize, **common)
    if method == "model_stock":
        return model_stock_config(base, models, **common)
    raise MergeError(f"unknown merge method {method!r}; known: {', '.join(METHODS)} (and the mediphi recipe)")


def config_from_params(params: Any, base: Model, models: Sequence[Model], t: T | None = None) -> MergeConfiguration:
    """The mergekit config of a :class:`medslm.params.MergeParams` (not ``mediphi``: see :func:`mediphi_stages`).
    ``t`` overrides ``params.t_list``/``params.t`` (e.g. one point of a sweep)."""
    if t is None:
        t = params.t_list if params.t_list else params.t
    return build_config(params.method, base, models, t=t, filters=params.module_t or None, weights=params.weights,
                        density=params.density, gamma=params.gamma, epsilon=params.epsilon, scale=params.scale,
                        normalize=params.normalize, dtype=params.dtype, tokenizer_source=params.tokenizer_source)


@dataclass(frozen=True)
class Stage:
    """One merge of a multi-stage recipe: its name, mergekit config and output folder."""

    name: str
    config: MergeConfiguration
    out: Path


def mediphi_stages(params: Any, base: Model, experts: Sequence[Model], work_dir: str | Path) -> list[Stage]:
    """MediPhi's recipe: each expert SLERPed into ``base`` at ``params.t`` (or ``t_list``), then breadcrumbs over
    those results with ``base`` as base_model (written to ``work_dir/final``)."""
    work_dir = Path(work_dir)
    if not experts:
        raise MergeError("the mediphi recipe needs at least one expert")
    common = {"dtype": params.dtype, "tokenizer_source": params.tokenizer_source}
    stages = []
    for i, expert in enumerate(experts):
        name = f"slerp_{i}_{Path(str(expert)).name or 'expert'}"
        stages.append(Stage(name, slerp_config(base, expert, params.t_list or params.t,
                                               filters=params.module_t or None, **common), work_dir / "stages" / name))
    final = task_vector_config(base, [s.out for s in stages], method="breadcrumbs", weights=params.weights,
                               density=params.density, gamma=params.gamma, **common)
    return [*stages, Stage("final", final, work_dir / "final")]


def config_models(config: MergeConfiguration) -> list[str]:
    """Distinct model paths of a config (base model first)."""
    refs = [config.base_model] if config.base_model is not None else []
    refs += [m.model for m in config.models or []]
    refs += [src.model for s in config.slices or [] for src in s.sources]
    for ref in refs:
        if ref.lora is not None:
            raise MergeError(f"{ref}: pass LoRA adapters through medslm.merge.resolve_parent (merged in full "
                             "precision once), not as mergekit's model+lora")
    return list(dict.fromkeys(ref.model.path for ref in refs))


def tokenizer_source(config: MergeConfiguration) -> str | None:
    """The config's tokenizer source (``base``/``union``/``model``), None when the vocabularies must match."""
    if config.tokenizer is not None:
        return config.tokenizer.source if isinstance(config.tokenizer.source, str) else "model"
    src = config.tokenizer_source
    return None if src is None else src if isinstance(src, str) else "model"
