"""The merges of 04_merge (a SLERP sweep, one merge, or a multi-stage recipe) and the measured point of each.

Every point of the trade-off is a :class:`SweepPoint`: the instruct parent (t = 0), each merge, the CPT parent
(t = 1), with its scores, sanity check and timings. An *evaluator* ``(model, tokenizer) -> {name: score}`` scores a
point: the toy world's probes (:func:`probe_evaluator`) or perplexity on held-out texts (:func:`perplexity_evaluator`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medslm.merge.configs import Stage, config_from_params, mediphi_stages
from medslm.merge.sanity import sanity_check
from medslm.params import MergeParams

Evaluator = Callable[[Any, Any], Mapping[str, float]]


@dataclass
class SweepPoint:
    """One measured model of the trade-off: ``t`` (0 = instruct, 1 = CPT), ``label`` (instruct, merge, cpt),
    whether it is a merge, its folder, numeric ``scores``, the ``sanity`` report, ``seconds`` and the evaluator's
    non-numeric ``detail`` (e.g. accuracy per relation)."""

    t: float
    label: str
    merged: bool
    model_dir: str
    scores: dict[str, float] = field(default_factory=dict)
    sanity: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def sanity_ok(self) -> bool | None:
        return self.sanity.get("ok")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepPoint:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def row(self) -> dict[str, Any]:
        """The flat summary kept in metrics.json and shown as a table."""
        return {"t": self.t, "label": self.label, "merged": self.merged, "scores": dict(self.scores),
                "sanity_ok": self.sanity_ok, "generation": self.sanity.get("text", "")}


@dataclass(frozen=True)
class PlannedMerge:
    """A merge to make: its t (the configured t for single merges and recipes) and the stages that produce it."""

    t: float
    stages: list[Stage]

    @property
    def out(self) -> Path:
        return self.stages[-1].out


def point_name(t: float) -> str:
    """Folder name of a sweep point: ``t_0.25``."""
    return f"t_{t:g}"


def plan_merges(params: MergeParams, instruct: Path, others: Sequence[Path], step_dir: Path) -> list[PlannedMerge]:
    """What 04_merge merges: a SLERP sweep (``step_dir/sweep/t_…``, t strictly between 0 and 1), the mediphi recipe
    (``step_dir/mediphi``) or one merge of ``params.method`` (``step_dir/<method>``). ``others``: CPT first."""
    if params.method == "mediphi":
        return [PlannedMerge(params.t, mediphi_stages(params, instruct, others, step_dir / "mediphi"))]
    if params.method == "slerp" and params.sweep:
        ts = [t for t in params.sweep if 0.0 < t < 1.0]
        return [PlannedMerge(t, [Stage(point_name(t), config_from_params(params, instruct, others, t=t),
                                       step_dir / "sweep" / point_name(t))]) for t in ts]
    return [PlannedMerge(params.t, [Stage(params.method, config_from_params(params, instruct, others),
                                          step_dir / params.method)])]


def probe_evaluator(probes: Sequence[Mapping[str, Any]], heldout: Sequence[Mapping[str, Any]] | None = None, *,
                    batch_size: int = 64, max_texts: int = 200) -> Evaluator:
    """Probe accuracy (``medical``, ``general``, ``chat``) via :func:`medslm.evaluate.evaluate_probes` plus
    ``ppl_<domain>`` on 00_prepare's held-out texts."""
    from medslm.evaluate import evaluate_probes, heldout_perplexity

    def evaluate_fn(model: Any, tokenizer: Any) -> dict[str, float]:
        scores = evaluate_probes(model, tokenizer, list(probes), batch_size=batch_size)
        if heldout:
            ppl = heldout_perplexity(model, tokenizer, list(heldout), max_texts=max_texts)
            scores.update({f"ppl_{k}": v for k, v in ppl.items()})
        return scores

    return evaluate_fn


def perplexity_evaluator(texts: Mapping[str, Sequence[str]], *, max_texts: int = 64) -> Evaluator:
    """Perplexity per domain on held-out texts (``{"medical": [...], "general": [...]}``, each capped at
    ``max_texts``): ``ppl_medical``, ``ppl_general`` — the scores of runs without probes."""
    from medslm.evaluate import perplexity

    capped = {domain: list(values)[:max_texts] for domain, values in texts.items() if values}
    if not capped:
        raise ValueError("perplexity_evaluator needs at least one non-empty list of texts")

    def evaluate_fn(model: Any, tokenizer: Any) -> dict[str, float]:
        return {f"ppl_{domain}": perplexity(model, tokenizer, values) for domain, values in sorted(capped.items())}

    return evaluate_fn


def no_scores(model: Any, tokenizer: Any) -> dict[str, float]:
    """The evaluator of a run with neither probes nor held-out texts: points are sanity-checked only."""
    return {}


def evaluate_point(model_dir: str | Path, evaluate_fn: Evaluator, *, t: float, label: str = "merge",
                   merged: bool = True, device: str = "cpu", sanity: bool = True,
                   sanity_prompt: str = "What is the capital of France?", merge_seconds: float = 0.0,
                   trust_remote_code: bool = False,
                   parent_answers: Sequence[str | tuple[str, float]] = ()) -> SweepPoint:
    """Sanity-check and score one model folder (a merge or a parent); non-finite weights get no scores.
    ``parent_answers``: the parents' greedy answers to ``sanity_prompt`` (with each parent's own log-loss on it),
    which a merge must stay close to."""
    from medslm.models import load_model, load_tokenizer

    start = time.perf_counter()
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    model = load_model(model_dir, device=device, trust_remote_code=trust_remote_code)
    check = sanity_check(model, tokenizer, prompt=sanity_prompt, parent_answers=parent_answers) if sanity \
        else {"ok": None}
    scores = dict(evaluate_fn(model, tokenizer)) if check.get("finite", True) else {}
    del model
    numeric = {k: float(v) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    seconds = {"merge": round(merge_seconds, 3), "total": round(merge_seconds + time.perf_counter() - start, 3)}
    return SweepPoint(float(t), label, merged, str(model_dir), numeric, check, seconds,
                      {k: v for k, v in scores.items() if k not in numeric})


def sweep_table(points: Sequence[SweepPoint], metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One flat row per point (t, label, scores, sanity ok and generated text), e.g. for ``pandas.DataFrame``."""
    rows = []
    for point in points:
        keys = metrics if metrics is not None else list(point.scores)
        rows.append({"t": point.t, "label": point.label, **{k: point.scores.get(k) for k in keys},
                     "sanity_ok": point.sanity_ok, "generation": point.sanity.get("text", "")})
    return rows
