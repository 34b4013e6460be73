"""Model merging with mergekit: config builders, compatibility and memory checks, a SLERP sweep and its selection.

The recipe (DeFineMed, MediPhi): the continually pre-trained (CPT) model knows medicine but has forgotten some
instruction following; merging it back into the instruct model trades the two off. In a notebook::

    cfg = slerp_config(instruct, cpt, t=0.5)            # a plain mergekit config dict (show it: config_yaml(cfg))
    check_compatible([instruct, cpt])                    # same architecture, sizes and vocabulary, or a clear error
    print(estimate_merge_memory([instruct, cpt])["summary"])
    merge(cfg, out_dir, seed=0)                          # mergekit's run_merge, atomic, with mergekit_config.yml + README.md
    results = sweep(instruct, cpt, [0.2, 0.5, 0.8], out_root, probe_evaluator(probes, heldout))
    sel = select_merge(results, min_general_fraction=0.95, min_chat_fraction=0.95)
    save_selection(sel, rundir.merge.selected)

**What t means** (mergekit issue #70): ``t`` is the weight of the *other* model. ``t = 0`` returns ``base_model``
(here the instruct model), ``t = 1`` the CPT model. SLERP treats each tensor as one long vector and interpolates
along the great circle between the two directions (lengths interpolated linearly); nearly parallel tensors
(|cos| > 0.9995) are interpolated linearly. A list of t values is a gradient over the layers: layer ``i`` of ``L``
gets the value at position ``i / (L - 1)`` of the list (linearly interpolated); embeddings, the final norm and the
LM head get the *first* value. ``filters`` give tensors whose name contains a key (``self_attn``, ``mlp``) their own t.

mergekit is imported lazily (the import costs seconds); config builders need only plain Python.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medslm.rundir import read_json, write_json, write_text

METHODS = ("slerp", "linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della",
           "model_stock")
TASK_VECTOR_METHODS = ("task_arithmetic", "ties", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della")
SPARSIFYING_METHODS = ("ties", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della")
DTYPES = ("float32", "bfloat16", "float16")
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_ST_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                   "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}

# Peak RSS of a fresh Python process after `import torch, transformers, mergekit` on the development machine
# (CPU torch 2.13, transformers 5.23, mergekit 0.1.5): 442 MiB measured (bench/merge_memory.py prints it).
IMPORT_OVERHEAD_BYTES = 450 * 2**20
# Shard sizes tried (largest first) when out_shard_size is not given; mergekit's default is 5B (bytes per shard).
SHARD_CANDIDATES = (5_000_000_000, 2_000_000_000, 1_000_000_000, 500_000_000, 200_000_000, 100_000_000)


class MergeError(ValueError):
    """A merge that cannot run as configured."""


class IncompatibleModelsError(MergeError):
    """Models that differ in architecture, sizes or vocabulary; ``differences`` lists field and value per model."""

    def __init__(self, message: str, differences: list[dict[str, Any]]):
        super().__init__(message)
        self.differences = differences


class MergeMemoryError(MemoryError):
    """The merge is estimated not to fit in the available memory; ``estimate`` holds the figures."""

    def __init__(self, message: str, estimate: dict[str, Any]):
        super().__init__(message)
        self.estimate = estimate


# --------------------------------------------------------------------------------------------------------------
# Config builders (plain dicts in mergekit's YAML schema)
# --------------------------------------------------------------------------------------------------------------


def _ref(model: str | Path) -> str | dict[str, Any]:
    """A mergekit model reference; paths containing '+' (mergekit's model+lora separator) or '@' are spelled out."""
    s = str(model)
    if "+" in s or "@" in s:
        return {"model": {"path": s}}
    return s


def _check_t(value: Any, what: str) -> Any:
    values = value if isinstance(value, list | tuple) else [value]
    if not values or (isinstance(value, list | tuple) and len(values) < 2):
        raise MergeError(f"{what} {value!r}: a gradient needs at least 2 values (a single value: pass a number)")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
            raise MergeError(f"{what} {value!r}: each t must be a number in [0, 1] (0 = base model, 1 = the other model)")
    return [float(v) for v in value] if isinstance(value, list | tuple) else float(value)


def _finish(cfg: dict[str, Any], dtype: str, tokenizer_source: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if dtype not in DTYPES:
        raise MergeError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    cfg["dtype"] = dtype
    if tokenizer_source is not None:
        if isinstance(tokenizer_source, Mapping):
            cfg["tokenizer"] = dict(tokenizer_source)
        elif tokenizer_source in ("base", "union"):
            cfg["tokenizer"] = {"source": tokenizer_source}
        else:
            raise MergeError(f"tokenizer_source {tokenizer_source!r} is not 'base', 'union' or a mergekit tokenizer dict")
    return cfg


def slerp_config(
    base: str | Path,
    other: str | Path,
    t: float | Sequence[float] = 0.5,
    *,
    filters: Mapping[str, float | Sequence[float]] | None = None,
    dtype: str = "float32",
    tokenizer_source: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """SLERP of ``other`` into ``base``: t=0 returns base, t=1 returns other; ``t`` may be a per-layer gradient list.

    ``filters`` maps a tensor-name part to its own t (or gradient), e.g. ``{"self_attn": [0, 0.5, 1], "mlp": 0.3}``;
    the first matching filter wins, other tensors get ``t``. Returns a mergekit config dict.
    """
    t_value = _check_t(list(t) if isinstance(t, list | tuple) else t, "t")
    if filters:
        setting: Any = [{"filter": str(k), "value": _check_t(list(v) if isinstance(v, list | tuple) else v,
                                                                f"filters[{k!r}]")} for k, v in filters.items()]
        setting.append({"value": t_value})
    else:
        setting = t_value
    cfg = {
        "merge_method": "slerp",
        "base_model": _ref(base),
        "models": [{"model": _ref(base)}, {"model": _ref(other)}],
        "parameters": {"t": setting},
    }
    return _finish(cfg, dtype, tokenizer_source)


def linear_config(
    models: Sequence[str | Path],
    weights: Sequence[float] | None = None,
    *,
    base: str | Path | None = None,
    normalize: bool = True,
    dtype: str = "float32",
    tokenizer_source: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Weighted average of ``models`` (``normalize``: divide by the sum of weights). ``base`` (default: the first
    model) only fixes the output config and tokenizer; pass it among ``models`` to average it in."""
    models = [str(m) for m in models]
    if len(models) < 2:
        raise MergeError("linear needs at least two models")
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise MergeError(f"linear: {len(weights)} weights for {len(models)} models")
    if normalize and abs(sum(weights)) < 1e-12:
        raise MergeError("linear: the weights sum to 0, so normalize=True would divide by zero")
    cfg = {
        "merge_method": "linear",
        "base_model": _ref(base if base is not None else models[0]),
        "models": [{"model": _ref(m), "parameters": {"weight": w}} for m, w in zip(models, weights, strict=True)],
        "parameters": {"normalize": bool(normalize)},
    }
    return _finish(cfg, dtype, tokenizer_source)


def task_vector_config(
    base: str | Path,
    models: Sequence[str | Path],
    *,
    method: str = "task_arithmetic",
    weights: Sequence[float] | None = None,
    density: float | None = None,
    gamma: float | None = None,
    epsilon: float | None = None,
    scale: float | None = None,
    normalize: bool | None = None,
    dtype: str = "float32",
    tokenizer_source: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Task-vector merges (``base + Σ weight·(model − base)``): task_arithmetic, ties, dare_ties, breadcrumbs,
    breadcrumbs_ties, della. ``density`` = share of each task vector kept, ``gamma`` = share of largest outliers
    dropped (breadcrumbs), ``epsilon`` (della), ``scale`` = mergekit's lambda; None = mergekit's default."""
    if method not in TASK_VECTOR_METHODS:
        raise MergeError(f"method {method!r} is not a task-vector method ({', '.join(TASK_VECTOR_METHODS)})")
    models = [str(m) for m in models]
    if not models:
        raise MergeError(f"{method} needs at least one model besides the base")
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise MergeError(f"{method}: {len(weights)} weights for {len(models)} models")
    entries = []
    for m, w in zip(models, weights, strict=True):
        p: dict[str, Any] = {"weight": w}
        if density is not None and method in SPARSIFYING_METHODS:
            if not 0.0 < density <= 1.0:
                raise MergeError(f"density {density} must be in (0, 1]")
            p["density"] = float(density)
        if gamma is not None and method.startswith("breadcrumbs"):
            p["gamma"] = float(gamma)
        if epsilon is not None and method == "della":
            p["epsilon"] = float(epsilon)
        entries.append({"model": _ref(m), "parameters": p})
    params: dict[str, Any] = {}
    if scale is not None:
        params["lambda"] = float(scale)
    if normalize is not None:
        params["normalize"] = bool(normalize)
    cfg: dict[str, Any] = {"merge_method": method, "base_model": _ref(base), "models": entries}
    if params:
        cfg["parameters"] = params
    return _finish(cfg, dtype, tokenizer_source)


def model_stock_config(
    base: str | Path,
    models: Sequence[str | Path],
    *,
    filter_wise: bool = False,
    dtype: str = "float32",
    tokenizer_source: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Model Stock: averages at least two fine-tuned models and moves towards the base by their angle."""
    if len(models) < 2:
        raise MergeError("model_stock needs the base and at least two fine-tuned models")
    cfg = {
        "merge_method": "model_stock",
        "base_model": _ref(base),
        "models": [{"model": _ref(m)} for m in models],
        "parameters": {"filter_wise": bool(filter_wise)},
    }
    return _finish(cfg, dtype, tokenizer_source)


def build_config(
    method: str,
    base: str | Path,
    models: Sequence[str | Path],
    *,
    t: float | Sequence[float] = 0.5,
    filters: Mapping[str, float | Sequence[float]] | None = None,
    weights: Sequence[float] | None = None,
    density: float | None = None,
    gamma: float | None = None,
    epsilon: float | None = None,
    scale: float | None = None,
    normalize: bool | None = None,
    dtype: str = "float32",
    tokenizer_source: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One mergekit config for ``method`` with ``base`` as base_model and ``models`` the others (CPT first)."""
    models = list(models)
    if method == "slerp":
        if len(models) != 1:
            raise MergeError(f"slerp merges exactly two models: the base and one other, got {len(models)} others")
        return slerp_config(base, models[0], t, filters=filters, dtype=dtype, tokenizer_source=tokenizer_source)
    if method == "linear":
        # Shares like SLERP's t: one other model gets t, the base 1 - t; with several, ``weights`` are the others'
        # shares and the base gets the rest (None: all models equal).
        if weights is None and len(models) == 1:
            if isinstance(t, list | tuple):
                raise MergeError("linear takes a scalar t; per-layer gradients are for slerp")
            tt = _check_t(t, "t")
            ws: list[float] | None = [1.0 - tt, tt]
        elif weights is not None:
            if len(weights) != len(models):
                raise MergeError(f"linear: {len(weights)} weights for {len(models)} models besides the base")
            if sum(weights) > 1.0 + 1e-9:
                raise MergeError(f"linear: the shares {list(weights)} of the other models sum to more than 1; the "
                                 "base gets 1 - their sum")
            ws = [1.0 - sum(weights), *weights]
        else:
            ws = None
        return linear_config([base, *models], ws, base=base, normalize=True if normalize is None else normalize,
                             dtype=dtype, tokenizer_source=tokenizer_source)
    if method in TASK_VECTOR_METHODS:
        return task_vector_config(base, models, method=method, weights=weights, density=density, gamma=gamma,
                                  epsilon=epsilon, scale=scale, normalize=normalize, dtype=dtype,
                                  tokenizer_source=tokenizer_source)
    if method == "model_stock":
        return model_stock_config(base, models, dtype=dtype, tokenizer_source=tokenizer_source)
    raise MergeError(f"unknown merge method {method!r}; known: {', '.join(METHODS)} (and the mediphi recipe)")


def config_from_params(params: Any, base: str | Path, models: Sequence[str | Path],
                       t: float | Sequence[float] | None = None) -> dict[str, Any]:
    """The mergekit config of a :class:`medslm.params.MergeParams` (not the multi-stage ``mediphi`` recipe:
    see :func:`mediphi_recipe`). ``t`` overrides ``params.t_list``/``params.t`` (e.g. one point of a sweep)."""
    if t is None:
        t = params.t_list if params.t_list else params.t
    return build_config(
        params.method, base, models, t=t, filters=params.module_t or None, weights=params.weights,
        density=params.density, gamma=params.gamma, epsilon=params.epsilon, scale=params.scale,
        normalize=params.normalize, dtype=params.dtype, tokenizer_source=params.tokenizer_source,
    )


def mediphi_recipe(
    base: str | Path,
    experts: Sequence[str | Path],
    work_dir: str | Path,
    *,
    t: float | Sequence[float] = 0.5,
    final_method: str = "breadcrumbs",
    weights: Sequence[float] | None = None,
    density: float | None = None,
    gamma: float | None = None,
    filters: Mapping[str, float | Sequence[float]] | None = None,
    dtype: str = "float32",
    tokenizer_source: str | Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """MediPhi's two-stage recipe: each expert SLERPed into ``base`` at ``t``, then ``final_method`` (breadcrumbs)
    over those results with ``base`` as base_model. Returns stages ``[{"name", "config", "out"}, …]`` for
    :func:`run_recipe`; the last stage writes ``work_dir/final``."""
    work_dir = Path(work_dir)
    if not experts:
        raise MergeError("the mediphi recipe needs at least one expert")
    stages = []
    for i, expert in enumerate(experts):
        name = f"slerp_{i}_{Path(str(expert)).name or 'expert'}"
        stages.append({"name": name, "out": str(work_dir / "stages" / name),
                       "config": slerp_config(base, expert, t, filters=filters, dtype=dtype,
                                              tokenizer_source=tokenizer_source)})
    final = task_vector_config(base, [s["out"] for s in stages], method=final_method, weights=weights,
                               density=density, gamma=gamma, dtype=dtype, tokenizer_source=tokenizer_source)
    stages.append({"name": "final", "out": str(work_dir / "final"), "config": final})
    return stages


def run_recipe(stages: Sequence[Mapping[str, Any]], **merge_kwargs: Any) -> Path:
    """Run the stages of a multi-stage recipe in order with :func:`merge`; returns the last stage's folder."""
    out = None
    for stage in stages:
        out = merge(stage["config"], stage["out"], **merge_kwargs)
    if out is None:
        raise MergeError("a recipe needs at least one stage")
    return out


def config_yaml(config: Mapping[str, Any]) -> str:
    """The config as mergekit YAML (what ``mergekit-yaml`` would read)."""
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False)


def _ref_path(ref: Any) -> str:
    if isinstance(ref, Mapping):
        model = ref.get("model", ref)
        return str(model.get("path") if isinstance(model, Mapping) else model)
    return str(ref)


def config_models(config: Mapping[str, Any]) -> list[str]:
    """Distinct model references of a config (base model first)."""
    refs = []
    if config.get("base_model") is not None:
        refs.append(_ref_path(config["base_model"]))
    for entry in config.get("models") or []:
        refs.append(_ref_path(entry["model"]))
    for sl in config.get("slices") or []:
        for src in sl.get("sources", []):
            refs.append(_ref_path(src["model"]))
    return list(dict.fromkeys(refs))


def _tokenizer_source(config: Mapping[str, Any]) -> str | None:
    tok = config.get("tokenizer")
    if isinstance(tok, Mapping):
        src = tok.get("source", "union")
        return src if isinstance(src, str) else "model"
    src = config.get("tokenizer_source")
    return None if src is None else str(src)


# --------------------------------------------------------------------------------------------------------------
# Model references: local folders, hub ids, LoRA adapters
# --------------------------------------------------------------------------------------------------------------


def is_lora_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a peft adapter folder (has adapter_config.json)."""
    return (Path(path) / "adapter_config.json").is_file()


def local_model_dir(ref: str | Path) -> Path:
    """A local folder for a model reference: the folder itself, or the hub snapshot of its config, tokenizer and
    safetensors (needs network or a filled HF cache)."""
    p = Path(str(ref)).expanduser()
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(ref), allow_patterns=["*.json", "*.safetensors", "tokenizer.model"]))
    except Exception as e:
        raise MergeError(f"model {str(ref)!r} is not a local folder and could not be fetched from the hub ({e}); "
                         "pass a local folder or allow network access") from e


def resolve_lora(adapter_dir: str | Path, cache_dir: str | Path, *, base: str | Path | None = None) -> Path:
    """Merge a LoRA adapter into a full-precision (float32) copy of its base model; returns that model folder.

    The base is ``base`` or the adapter's ``base_model_name_or_path``; it is reloaded in float32 even when the
    adapter was trained with QLoRA (merging into 4-bit weights would lose the precision the merge needs). The result
    is cached in ``cache_dir`` under a key of the adapter's files and the base reference.
    """
    adapter_dir = Path(adapter_dir)
    acfg = read_json(adapter_dir / "adapter_config.json")
    base_ref = str(base if base is not None else acfg.get("base_model_name_or_path") or "")
    if not base_ref:
        raise MergeError(f"{adapter_dir}: adapter_config.json names no base_model_name_or_path; pass base=")
    if not Path(base_ref).is_dir() and (adapter_dir / base_ref).is_dir():
        base_ref = str(adapter_dir / base_ref)
    base_dir = local_model_dir(base_ref)
    base_cfg = read_json(base_dir / "config.json") if (base_dir / "config.json").is_file() else {}
    if base_cfg.get("quantization_config"):
        raise MergeError(f"the base model {base_ref!r} of adapter {adapter_dir} is a quantized checkpoint; merge the "
                         "adapter into a bfloat16/float32 copy of the original weights, never into 4-bit weights")
    h = hashlib.sha256(base_ref.encode())
    for f in sorted(adapter_dir.iterdir()):
        if f.is_file() and (f.name.startswith("adapter_") or f.name.startswith("tokenizer")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    out = Path(cache_dir) / f"{adapter_dir.name}-merged-{h.hexdigest()[:12]}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out

    from medslm.models import merge_lora_adapter

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    merge_lora_adapter(base_dir, adapter_dir, tmp, device="cpu")  # fp32 on the CPU, never 4-bit weights
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def resolve_config_models(config: Mapping[str, Any], cache_dir: str | Path) -> dict[str, Any]:
    """A copy of ``config`` in which every LoRA adapter folder is replaced by its merged full-precision model."""
    config = copy.deepcopy(dict(config))
    memo: dict[str, str] = {}

    def fix(ref: Any) -> Any:
        path = _ref_path(ref)
        if path not in memo:
            memo[path] = str(resolve_lora(path, cache_dir)) if is_lora_adapter(path) else path
        return ref if memo[path] == path else _ref(memo[path])

    if config.get("base_model") is not None:
        config["base_model"] = fix(config["base_model"])
    for entry in config.get("models") or []:
        entry["model"] = fix(entry["model"])
    return config


# --------------------------------------------------------------------------------------------------------------
# Compatibility
# --------------------------------------------------------------------------------------------------------------

ARCH_FIELDS = ("architectures", "model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
               "num_attention_heads", "num_key_value_heads", "head_dim")
VOCAB_FIELDS = ("vocab_size",)


def _model_config(model_dir: Path) -> dict[str, Any]:
    f = model_dir / "config.json"
    if not f.is_file():
        raise MergeError(f"{model_dir} has no config.json (not a Hugging Face model folder)")
    cfg = read_json(f)
    text = cfg.get("text_config")
    if isinstance(text, dict) and "hidden_size" not in cfg:  # multimodal wrappers keep the LM sizes inside
        cfg = {**text, "architectures": cfg.get("architectures"), "model_type": cfg.get("model_type")}
    return cfg


def _tokenizer_vocab(model_dir: Path) -> dict[str, int] | None:
    if not any((model_dir / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir)).get_vocab()


def check_compatible(
    model_dirs: Sequence[str | Path],
    *,
    tokenizer_source: str | None = None,
    check_tokenizer: bool = True,
) -> dict[str, Any]:
    """Check that models can be merged tensor by tensor: same architecture, layer count, hidden/intermediate sizes,
    heads, and vocabulary (config vocab_size and the tokenizer's token → id map).

    With ``tokenizer_source`` ``base`` or ``union`` (mergekit's ``tokenizer: {source: …}``) vocabulary differences
    are allowed: mergekit then aligns the embedding rows. Raises :class:`IncompatibleModelsError` naming every field
    that differs with its value per model; returns a summary (the shared values, vocab size, notes).
    """
    dirs = [local_model_dir(d) for d in model_dirs]
    if len(dirs) < 2:
        raise MergeError("check_compatible needs at least two models")
    for d, ref in zip(dirs, model_dirs, strict=True):
        if is_lora_adapter(d):
            raise MergeError(f"{ref} is a LoRA adapter; resolve it first (resolve_lora) or pass it to merge(), "
                             "which merges it into a full-precision copy of its base")
    cfgs = [_model_config(d) for d in dirs]
    names = [str(m) for m in model_dirs]
    differences: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"models": names, "fields": {}, "notes": []}
    for field in ARCH_FIELDS + VOCAB_FIELDS:
        values = [c.get(field) for c in cfgs]
        if len({json.dumps(v) for v in values}) > 1:
            differences.append({"field": field, "values": dict(zip(names, values, strict=True))})
        else:
            summary["fields"][field] = values[0]

    if check_tokenizer:
        vocabs = [_tokenizer_vocab(d) for d in dirs]
        present = [(n, v) for n, v in zip(names, vocabs, strict=True) if v is not None]
        for n, v in zip(names, vocabs, strict=True):
            if v is None:
                summary["notes"].append(f"{n} has no tokenizer files; its vocabulary was not compared")
        if present:
            ref_name, ref_vocab = present[0]
            summary["tokenizer_vocab_size"] = len(ref_vocab)
            for n, v in present[1:]:
                if v != ref_vocab:
                    only_ref = [t for t in ref_vocab if t not in v]
                    only_other = [t for t in v if t not in ref_vocab]
                    moved = sum(1 for t, i in v.items() if t in ref_vocab and ref_vocab[t] != i)
                    differences.append({
                        "field": "tokenizer vocab",
                        "values": {ref_name: len(ref_vocab), n: len(v)},
                        "detail": (f"{len(only_ref)} tokens only in {ref_name} (e.g. {only_ref[:3]}), {len(only_other)} "
                                   f"only in {n} (e.g. {only_other[:3]}), {moved} shared tokens with other ids"),
                    })

    vocab_fields = {"vocab_size", "tokenizer vocab"}
    fatal = [d for d in differences if d["field"] not in vocab_fields or tokenizer_source not in ("base", "union", "model")]
    handled = [d for d in differences if d not in fatal]
    for d in handled:
        summary["notes"].append(f"{d['field']} differs ({d['values']}); tokenizer source {tokenizer_source!r} aligns it")
    if fatal:
        lines = []
        for d in fatal:
            vals = ", ".join(f"{k} = {v!r}" for k, v in d["values"].items())
            lines.append(f"  - {d['field']}: {vals}" + (f" ({d['detail']})" if d.get("detail") else ""))
        hint = []
        if any(d["field"] in vocab_fields for d in fatal):
            hint.append("the vocabularies differ: pass tokenizer_source='base' (keep the base model's tokenizer; "
                        "mergekit config `tokenizer: {source: base}`) or tokenizer_source='union' (all tokens of "
                        "both; `tokenizer: {source: union}`)")
        if any(d["field"] not in vocab_fields for d in fatal):
            hint.append("the architectures differ: SLERP, linear and task-vector merges need models of the same "
                        "architecture and sizes, e.g. a fine-tune (CPT) of the same base model")
        raise IncompatibleModelsError(
            "models cannot be merged, they differ in:\n" + "\n".join(lines) + "\n" + "\n".join(f"  → {h}" for h in hint),
            fatal,
        )
    return summary


# --------------------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------------------


def safetensors_summary(model_dir: str | Path) -> dict[str, int]:
    """Bytes, parameter count and largest tensor (elements) of a model folder, from its safetensors headers
    (no tensor is read). Folders with only ``.bin`` files are sized by file size (fp32 assumed for counts)."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    total = params = largest = 0
    for f in files:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            numel = math.prod(info["shape"]) if info["shape"] else 1
            start, end = info["data_offsets"]
            total += end - start
            params += numel
            largest = max(largest, numel)
    if not files:
        bins = sorted(model_dir.glob("*.bin"))
        if not bins:
            raise MergeError(f"{model_dir} has no .safetensors or .bin weight files")
        total = sum(f.stat().st_size for f in bins)
        params = total // 4
        largest = params // 8  # unknown without unpickling; a generous guess
    return {"bytes": total, "params": params, "largest_tensor": largest}


def parse_size(value: int | str) -> int:
    """``500M`` → 500_000_000 (K, M, B suffixes as in mergekit's --out-shard-size)."""
    if isinstance(value, int):
        return value
    s = str(value).strip()
    mult = {"K": 10**3, "M": 10**6, "B": 10**9}.get(s[-1:].upper())
    return int(s[:-1]) * mult if mult else int(s)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def estimate_merge_memory(
    model_dirs: Sequence[str | Path],
    *,
    dtype: str = "float32",
    method: str = "slerp",
    out_shard_size: int | str | None = None,
    device: str = "cpu",
    low_cpu_memory: bool = False,
    available_bytes: int | None = None,
    available_vram_bytes: int | None = None,
    overhead_bytes: int = IMPORT_OVERHEAD_BYTES,
) -> dict[str, Any]:
    """Peak RAM of a mergekit merge of ``model_dirs`` (all inputs, base included), and whether it fits.

    Model (fitted on this machine, see bench/merge_memory.py)::

        needed = import overhead + Σ input model bytes (safetensors are memory-mapped and every page is read)
                 + one output shard (mergekit holds a shard in RAM until it writes it)
                 + (inputs + 1) × the largest tensor in float32 (the arithmetic of one tensor;
                   + 2 more for the task-vector methods, which stack deltas and sign masks)

    For two inputs and one shard this is ≈ overhead + 3 × one model. Without ``out_shard_size`` the largest shard
    size (5B … 100M bytes) that fits is chosen. ``available_bytes`` defaults to psutil's available RAM, VRAM to
    torch.cuda.mem_get_info (only checked for ``device='cuda'``). Returns bytes per term, ``fits`` and a summary.
    """
    if dtype not in DTYPES:
        raise MergeError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    dirs = list(dict.fromkeys(str(local_model_dir(d)) for d in model_dirs))
    sums = [safetensors_summary(d) for d in dirs]
    inputs = sum(s["bytes"] for s in sums)
    params = max(s["params"] for s in sums)
    largest = max(s["largest_tensor"] for s in sums)
    output = params * _DTYPE_BYTES[dtype]
    working = (len(dirs) + 1 + (2 if method in TASK_VECTOR_METHODS else 0)) * largest * 4
    if available_bytes is None:
        import psutil

        available_bytes = int(psutil.virtual_memory().available)

    def need(shard: int) -> int:
        return overhead_bytes + inputs + min(shard, output) + working

    if out_shard_size is not None:
        shard = parse_size(out_shard_size)
    else:
        shard = next((s for s in SHARD_CANDIDATES if need(s) <= available_bytes), SHARD_CANDIDATES[-1])
    needed = need(shard)
    est: dict[str, Any] = {
        "models": dirs,
        "model_bytes": [s["bytes"] for s in sums],
        "overhead_bytes": overhead_bytes,
        "inputs_bytes": inputs,
        "output_bytes": output,
        "shard_bytes": min(shard, output),
        "working_bytes": working,
        "needed_bytes": needed,
        "available_bytes": available_bytes,
        "out_shard_size": shard,
        "device": device,
        "fits_ram": needed <= available_bytes,
    }
    fits = est["fits_ram"]
    if device.startswith("cuda"):
        if available_vram_bytes is None:
            import torch

            available_vram_bytes = int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else 0
        vram = working + (output if low_cpu_memory else 0)
        est.update(vram_needed_bytes=vram, vram_available_bytes=available_vram_bytes,
                   fits_vram=vram <= available_vram_bytes)
        fits = fits and est["fits_vram"]
    est["fits"] = fits
    est["summary"] = (
        f"merge of {len(dirs)} models needs ≈ {_gib(needed)} RAM (imports {_gib(overhead_bytes)} + inputs "
        f"{_gib(inputs)} + output shard {_gib(est['shard_bytes'])} + working {_gib(working)}); available "
        f"{_gib(available_bytes)}; out_shard_size {shard:,} bytes"
        + (f"; VRAM {_gib(est['vram_needed_bytes'])} of {_gib(available_vram_bytes)}" if "fits_vram" in est else "")
        + ("" if fits else " → does NOT fit")
    )
    return est


def check_memory(estimate: Mapping[str, Any]) -> None:
    """Raise :class:`MergeMemoryError` (needed vs available, and what to try) when the estimate does not fit."""
    if estimate["fits"]:
        return
    lines = []
    if not estimate["fits_ram"]:
        lines.append(f"the merge needs about {_gib(estimate['needed_bytes'])} of RAM but only "
                     f"{_gib(estimate['available_bytes'])} is available (imports {_gib(estimate['overhead_bytes'])}, "
                     f"input models {_gib(estimate['inputs_bytes'])}, output shard {_gib(estimate['shard_bytes'])}, "
                     f"working tensors {_gib(estimate['working_bytes'])})")
    if estimate.get("fits_vram") is False:
        lines.append(f"the GPU needs about {_gib(estimate['vram_needed_bytes'])} but has "
                     f"{_gib(estimate['vram_available_bytes'])} free")
    tips = ("smaller output shards (out_shard_size='200M'), dtype bfloat16 (half the output), lazy_unpickle=True for "
            ".bin checkpoints, low_cpu_memory=True with a GPU that has more memory than the machine has RAM, closing "
            "other models in this kernel, or a machine with more memory")
    raise MergeMemoryError("; ".join(lines) + f". Try: {tips}.", dict(estimate))


# --------------------------------------------------------------------------------------------------------------
# Running a merge
# --------------------------------------------------------------------------------------------------------------

MODEL_CARD = """---
library_name: transformers
tags:
- mergekit
- merge
---
# {name}

A merge of pre-trained language models made with [mergekit](https://github.com/arcee-ai/mergekit) by medslm.

### Configuration

```yaml
{config_yaml}
```
"""


def merge(
    config: Mapping[str, Any],
    out_dir: str | Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    out_shard_size: int | str | None = None,
    check: bool = True,
    memory_check: bool = True,
    available_bytes: int | None = None,
    lora_cache_dir: str | Path | None = None,
    lazy_unpickle: bool = False,
    low_cpu_memory: bool = False,
    allow_crimes: bool = False,
    quiet: bool = True,
) -> Path:
    """Run one mergekit merge into ``out_dir`` (replaced atomically) and return it.

    Before merging: LoRA adapter folders are merged into full-precision copies of their bases (cached in
    ``lora_cache_dir``, default ``<out_dir>/../.lora_merged``), the models are checked with :func:`check_compatible`
    and the memory with :func:`estimate_merge_memory`. ``seed`` is mergekit's random_seed (dare_ties, della).
    The folder holds the weights (safetensors), config, tokenizer, ``mergekit_config.yml`` and a README model card.
    """
    from medslm.models import resolve_device

    out_dir = Path(out_dir)
    device = resolve_device(device)
    config = dict(config)
    if not config.get("base_model"):
        raise MergeError("set base_model: without it mergekit's output config depends on the order of a hash set")
    config = resolve_config_models(config, lora_cache_dir or out_dir.parent / ".lora_merged")
    models = config_models(config)
    if check:
        check_compatible(models, tokenizer_source=_tokenizer_source(config))
    est = estimate_merge_memory(models, dtype=config.get("dtype") or "float32",
                                method=str(config.get("merge_method")), out_shard_size=out_shard_size,
                                device=device, low_cpu_memory=low_cpu_memory, available_bytes=available_bytes)
    if memory_check:
        check_memory(est)

    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    merge_config = MergeConfiguration.model_validate(config)
    options = MergeOptions(
        random_seed=seed,
        out_shard_size=est["out_shard_size"],
        device=device,
        cuda=device.startswith("cuda"),
        low_cpu_memory=low_cpu_memory,
        lazy_unpickle=lazy_unpickle,
        allow_crimes=allow_crimes,
        copy_tokenizer=True,
        write_model_card=True,
        safe_serialization=True,
        quiet=quiet,
    )
    # mergekit caches tensor loaders per model path for the whole process; a path re-written by an earlier merge
    # (a recipe stage, a sweep point) would be read through a stale index. Start each merge fresh.
    LoaderCache().loaders.clear()
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The config as given (mergekit rewrites `models` into `modules/slices` while planning): this YAML goes
        # into mergekit_config.yml and the README card, and a re-run with the same config can reuse the folder.
        yml = merge_config.to_yaml()
        run_merge(merge_config, str(tmp), options=options, config_source=yml)
        if not (tmp / "mergekit_config.yml").is_file():
            write_text(tmp / "mergekit_config.yml", yml)
        if not (tmp / "README.md").is_file():
            write_text(tmp / "README.md", MODEL_CARD.format(name=out_dir.name, config_yaml=yml))
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        LoaderCache().loaders.clear()
    return out_dir


def _same_merge(out_dir: Path, config: Mapping[str, Any]) -> bool:
    """Whether ``out_dir`` holds a finished merge of exactly ``config`` (so a sweep can resume)."""
    f = out_dir / "mergekit_config.yml"
    if not f.is_file() or not (out_dir / "config.json").is_file():
        return False
    from mergekit.config import MergeConfiguration

    return f.read_text(encoding="utf-8") == MergeConfiguration.model_validate(dict(config)).to_yaml()


# --------------------------------------------------------------------------------------------------------------
# Sanity check, evaluation, sweep
# --------------------------------------------------------------------------------------------------------------


def _nonfinite_in_dir(model_dir: Path, limit: int = 10) -> list[str]:
    from safetensors import safe_open

    bad = []
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                x = st.get_tensor(name)
                if x.is_floating_point() and not bool(x.isfinite().all()):
                    bad.append(name)
                    if len(bad) >= limit:
                        return bad
    return bad


def sanity_check(
    model: Any,
    tokenizer: Any = None,
    *,
    prompt: str = "What is the capital of France?",
    max_new_tokens: int = 12,
    device: str = "cpu",
    chat: bool = True,
) -> dict[str, Any]:
    """Cheap checks of a merged model (a folder or a loaded model): every weight finite, and greedy generation
    from ``prompt`` (in the chat template when the tokenizer has one) is non-empty and not one token repeated.

    Returns ``{"ok", "finite", "nonfinite", "text", "new_tokens", "distinct_tokens", "problems"}``.
    """
    import torch

    from medslm.models import load_model, load_tokenizer

    problems: list[str] = []
    if isinstance(model, str | Path):
        model_dir = Path(model)
        nonfinite = _nonfinite_in_dir(model_dir)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
        model = None if nonfinite else load_model(model_dir, device=device)
    else:
        nonfinite = [n for n, p in model.named_parameters() if p.is_floating_point() and not bool(p.isfinite().all())]
    report: dict[str, Any] = {"finite": not nonfinite, "nonfinite": nonfinite[:10], "text": "", "new_tokens": 0,
                              "distinct_tokens": 0}
    if nonfinite:
        problems.append(f"non-finite weights (NaN/inf) in {len(nonfinite)} tensor(s), e.g. {nonfinite[0]}")
    else:
        if chat and getattr(tokenizer, "chat_template", None):
            enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
        else:
            enc = tokenizer(prompt, return_tensors="pt")
        dev = next(model.parameters()).device
        enc = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                 else tokenizer.eos_token_id)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        content = [i for i in new if i not in special]
        text = tokenizer.decode(new, skip_special_tokens=True)
        report.update(text=text, new_tokens=len(new), distinct_tokens=len(set(content)))
        if not text.strip():
            problems.append("greedy generation is empty (only special tokens or whitespace)")
        elif len(content) >= 4 and len(set(content)) == 1:
            problems.append(f"greedy generation repeats one token: {text[:40]!r}")
    report["problems"] = problems
    report["ok"] = not problems
    return report


def probe_evaluator(
    probes: Sequence[Mapping[str, Any]],
    heldout: Sequence[Mapping[str, Any]] | None = None,
    *,
    batch_size: int = 64,
    max_texts: int = 200,
) -> Callable[[Any, Any], dict[str, Any]]:
    """An ``evaluate_fn(model, tokenizer)`` for :func:`sweep`: probe accuracy (``medical``, ``general``, ``chat``)
    via :func:`medslm.evaluate.evaluate_probes` plus ``ppl_<domain>`` via ``heldout_perplexity``."""
    from medslm.evaluate import evaluate_probes, heldout_perplexity

    def evaluate_fn(model: Any, tokenizer: Any) -> dict[str, Any]:
        scores = evaluate_probes(model, tokenizer, list(probes), batch_size=batch_size)
        if heldout:
            ppl = heldout_perplexity(model, tokenizer, list(heldout), max_texts=max_texts)
            scores.update({f"ppl_{k}": v for k, v in ppl.items()})
        return scores

    return evaluate_fn


def point_name(t: float) -> str:
    """Folder name of a sweep point: ``t_0.25``."""
    return f"t_{t:g}"


def sweep(
    base_dir: str | Path,
    other_dir: str | Path,
    ts: Sequence[float],
    out_root: str | Path,
    evaluate_fn: Callable[[Any, Any], Mapping[str, Any]],
    *,
    filters: Mapping[str, float | Sequence[float]] | None = None,
    dtype: str = "float32",
    tokenizer_source: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    labels: tuple[str, str] = ("instruct", "cpt"),
    sanity: bool = True,
    sanity_prompt: str = "What is the capital of France?",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """SLERP ``other_dir`` into ``base_dir`` at each t (``out_root/t_0.25`` …), sanity-check and evaluate each
    merge, and evaluate the two parents without merging (t=0 = ``labels[0]``, t=1 = ``labels[1]``).

    ``evaluate_fn(model, tokenizer) -> {"medical": …, "general": …, "chat": …}`` (e.g. :func:`probe_evaluator`).
    A finished merge of the same config is reused. Results (sorted by t) are also written to
    ``out_root/sweep.json``; each is ``{"t", "label", "merged", "model_dir", "scores", "sanity", "seconds"}``.
    """
    from tqdm.auto import tqdm

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    if any(not 0.0 <= float(t) <= 1.0 for t in ts):
        raise MergeError(f"sweep t values {list(ts)} must lie in [0, 1]")
    # LoRA adapters become full-precision models once, so every point merges (and evaluates) the same folders.
    base_dir, other_dir = (resolve_lora(d, out_root / ".lora_merged") if is_lora_adapter(d) else Path(d)
                           for d in (base_dir, other_dir))
    points: list[tuple[float, str, Path | None]] = [(0.0, labels[0], base_dir)]
    points += [(float(t), "merge", None) for t in sorted(set(ts)) if 0.0 < float(t) < 1.0]
    points.append((1.0, labels[1], other_dir))
    results: list[dict[str, Any]] = []
    for t, label, model_dir in tqdm(points, desc="merge sweep", disable=not progress):
        start = time.perf_counter()
        merged = model_dir is None
        if model_dir is None:
            cfg = slerp_config(base_dir, other_dir, t, filters=filters, dtype=dtype, tokenizer_source=tokenizer_source)
            model_dir = out_root / point_name(t)
            if not _same_merge(model_dir, cfg):
                merge(cfg, model_dir, seed=seed, device=device)
        results.append(evaluate_point(model_dir, evaluate_fn, t=t, label=label, merged=merged, device=device,
                                      sanity=sanity, sanity_prompt=sanity_prompt,
                                      merge_seconds=time.perf_counter() - start))
        write_json(out_root / "sweep.json", results)
    return results


def evaluate_point(
    model_dir: str | Path,
    evaluate_fn: Callable[[Any, Any], Mapping[str, Any]],
    *,
    t: float,
    label: str = "merge",
    merged: bool = True,
    device: str = "cpu",
    sanity: bool = True,
    sanity_prompt: str = "What is the capital of France?",
    merge_seconds: float = 0.0,
) -> dict[str, Any]:
    """Sanity-check and evaluate one model folder (a merge or a parent) as a sweep result:
    ``{"t", "label", "merged", "model_dir", "scores", "sanity", "seconds"}`` (a model with non-finite weights gets
    no scores). Used by :func:`sweep` and for single merges (other methods, recipes)."""
    from medslm.models import load_model, load_tokenizer

    start = time.perf_counter()
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, device=device)
    check = sanity_check(model, tokenizer, prompt=sanity_prompt) if sanity else {"ok": None}
    scores = dict(evaluate_fn(model, tokenizer)) if check.get("finite", True) else {}
    del model
    return {"t": float(t), "label": label, "merged": merged, "model_dir": str(model_dir), "scores": scores,
            "sanity": check, "seconds": {"merge": round(merge_seconds, 3),
                                         "total": round(merge_seconds + time.perf_counter() - start, 3)}}


def sweep_table(results: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One flat row per sweep point (t, label, the numeric scores, sanity ok and generated text), e.g. for
    ``pandas.DataFrame(sweep_table(results))``."""
    rows = []
    for r in results:
        scores = r.get("scores") or {}
        keys = metrics if metrics is not None else [k for k, v in scores.items() if isinstance(v, int | float)]
        sanity = r.get("sanity") or {}
        rows.append({"t": r["t"], "label": r["label"], **{k: scores.get(k) for k in keys},
                     "sanity_ok": sanity.get("ok"), "generation": sanity.get("text", "")})
    return rows


# --------------------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------------------


def select_merge(
    results: Sequence[Mapping[str, Any]],
    *,
    target: str = "medical",
    min_general_fraction: float = 0.95,
    min_chat_fraction: float = 0.95,
    reference_label: str = "instruct",
) -> dict[str, Any]:
    """The trade-off choice: maximise ``target`` subject to ``general >= min_general_fraction × reference general``
    and the same for ``chat`` (reference = the instruct parent, t=0).

    Candidates are the merges and the other parent (t=1) whose sanity check did not fail. Ties go to the larger
    constraint margin, then the smaller t. When no candidate qualifies, the one with the smallest shortfall is chosen
    (``fallback: true``, with a note). Returns ``{"selected", "rule", "fallback", "note", "qualified",
    "reference", "candidates"}``; ``selected`` has ``t``, ``label``, ``model_dir`` and ``scores``.
    """
    ref = next((r for r in results if r["label"] == reference_label), None)
    if ref is None:
        raise MergeError(f"no result labelled {reference_label!r} (the reference model) among the sweep results")
    constraints = {"general": min_general_fraction, "chat": min_chat_fraction}
    notes = []
    for metric in list(constraints):
        if metric not in ref["scores"]:
            notes.append(f"the reference has no {metric!r} score, so that constraint is skipped")
            del constraints[metric]
    needs = {m: f * float(ref["scores"][m]) for m, f in constraints.items()}
    rule = f"maximize {target} subject to " + (" and ".join(
        f"{m} >= {constraints[m]:g} × {reference_label} {m} ({float(ref['scores'][m]):.4g}) = {needs[m]:.4g}"
        for m in constraints) or "no constraint")

    table = []
    for r in results:
        if r is ref:
            continue
        sanity_ok = (r.get("sanity") or {}).get("ok") is not False
        scores = r.get("scores") or {}
        row = {"t": r["t"], "label": r["label"], "model_dir": r["model_dir"], "sanity_ok": sanity_ok,
               target: scores.get(target), **{m: scores.get(m) for m in constraints}}
        ok = sanity_ok and scores.get(target) is not None and all(scores.get(m) is not None for m in constraints)
        if ok:
            ratios = [float(scores[m]) / needs[m] if needs[m] > 0 else math.inf for m in constraints]
            row["margin"] = min(ratios, default=math.inf)
            row["qualifies"] = all(float(scores[m]) >= needs[m] - 1e-12 for m in constraints)
        else:
            row["margin"], row["qualifies"] = None, False
        row["eligible"] = ok
        table.append(row)

    eligible = [r for r in table if r["eligible"]]
    excluded = [r for r in table if not r["sanity_ok"]]
    if excluded:
        notes.append("excluded after a failed sanity check: " + ", ".join(f"t={r['t']:g}" for r in excluded))
    qualified = [r for r in eligible if r["qualifies"]]

    def key(r: Mapping[str, Any]) -> tuple[float, float, float]:
        return (float(r[target]), float(r["margin"]), -float(r["t"]))

    if qualified:
        best = max(qualified, key=key)
        fallback = False
        notes.insert(0, f"{len(qualified)} of {len(eligible)} candidates meet the constraints; t={best['t']:g} "
                        f"({best['label']}) has the highest {target} ({float(best[target]):.4g})")
        chosen = next(r for r in results if r["model_dir"] == best["model_dir"])
    elif eligible:
        best = max(eligible, key=lambda r: (float(r["margin"]), float(r[target]), -float(r["t"])))
        fallback = True
        notes.insert(0, f"no candidate meets the constraints; fell back to t={best['t']:g} ({best['label']}), the one "
                        f"with the smallest shortfall (worst constraint at {100 * float(best['margin']):.1f} % of its "
                        "threshold). Consider smaller t values, a per-module t (self_attn/mlp), or keeping the "
                        f"{reference_label} model")
        chosen = next(r for r in results if r["model_dir"] == best["model_dir"])
    else:
        fallback = True
        notes.insert(0, f"every candidate failed its sanity check or has no scores; kept the {reference_label} model")
        chosen = ref
    return {
        "selected": {"t": chosen["t"], "label": chosen["label"], "model_dir": chosen["model_dir"],
                     "scores": {k: v for k, v in (chosen.get("scores") or {}).items() if isinstance(v, int | float)}},
        "rule": rule,
        "constraints": constraints,
        "thresholds": needs,
        "fallback": fallback,
        "note": "; ".join(notes),
        "qualified": [r["t"] for r in qualified],
        "reference": {"t": ref["t"], "label": ref["label"], "model_dir": ref["model_dir"],
                      "scores": {k: v for k, v in ref["scores"].items() if isinstance(v, int | float)}},
        "candidates": table,
    }


def select_nearest(results: Sequence[Mapping[str, Any]], t: float, reason: str) -> dict[str, Any]:
    """A selection without scores (no evaluation data): the merge whose t is closest to the configured ``t``.
    Same shape as :func:`select_merge` (``fallback: true``, the ``reason`` in the note)."""
    merged = [r for r in results if r.get("merged") and (r.get("sanity") or {}).get("ok") is not False]
    if not merged:
        raise MergeError("no merge passed its sanity check; nothing to select")
    chosen = min(merged, key=lambda r: (abs(float(r["t"]) - t), float(r["t"])))
    ref = results[0]
    return {
        "selected": {"t": chosen["t"], "label": chosen["label"], "model_dir": chosen["model_dir"],
                     "scores": {k: v for k, v in (chosen.get("scores") or {}).items() if isinstance(v, int | float)}},
        "rule": f"the merge closest to the configured t={t:g}",
        "constraints": {},
        "thresholds": {},
        "fallback": True,
        "note": f"{reason}; kept the merge at t={chosen['t']:g}",
        "qualified": [],
        "reference": {"t": ref["t"], "label": ref["label"], "model_dir": ref["model_dir"], "scores": {}},
        "candidates": [],
    }


def save_selection(selection: Mapping[str, Any], selected_dir: str | Path) -> Path:
    """Copy the chosen model folder to ``selected_dir`` (replacing it atomically) and write
    ``selected_dir/selection.json`` explaining the choice; returns ``selected_dir``."""
    selected_dir = Path(selected_dir)
    src = Path(selection["selected"]["model_dir"])
    tmp = selected_dir.with_name(f".{selected_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("selection.json", ".*"))
    write_json(tmp / "selection.json", {**selection, "source_dir": str(src)})
    shutil.rmtree(selected_dir, ignore_errors=True)
    os.replace(tmp, selected_dir)
    return selected_dir


def resolve_parents(rundir: Any, params: Any) -> tuple[str, str]:
    """The (instruct, cpt) model references of a run: ``params.instruct`` or 00_prepare's model (a folder, or the
    reference in base_model.json), and ``params.cpt_model`` or 03_cpt's model (else its adapter)."""
    instruct = params.instruct
    if instruct is None:
        if rundir.prepare.model.is_dir():
            instruct = str(rundir.prepare.model)
        elif rundir.prepare.base_model.is_file():
            info = read_json(rundir.prepare.base_model)
            instruct = info if isinstance(info, str) else next(
                (info[k] for k in ("ref", "model", "base_model", "path", "id") if isinstance(info, dict) and k in info),
                None)
        if instruct is None:
            raise MergeError(f"no instruct model: {rundir.prepare.model} does not exist; run 00_prepare or set instruct")
    cpt = params.cpt_model
    if cpt is None:
        if rundir.cpt.model.is_dir():
            cpt = str(rundir.cpt.model)
        elif rundir.cpt.adapter.is_dir():
            cpt = str(rundir.cpt.adapter)
        else:
            raise MergeError(f"no CPT model: neither {rundir.cpt.model} nor {rundir.cpt.adapter} exists; run 03_cpt "
                             "or set cpt_model")
    return str(instruct), str(cpt)
