"""Which merge to keep: a rule stated before the sweep is seen, applied to the measured points.

The rule (:class:`SelectionRule`): among the *merges* (0 < t < 1) whose sanity check passed, take the best
``target`` score subject to each constraint metric staying within a share of the instruct model's (t = 0) and being
strictly better than the CPT model's (t = 1) — a merge exists to restore what CPT lost, so one that does not beat
CPT on what it restores is not worth keeping. Hence a selected point always has t < 1. When no merge qualifies, the
merge with the smallest shortfall is kept and the selection says so (``fallback``) with the reason.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medslm.merge.configs import MergeError
from medslm.merge.sweep import SweepPoint
from medslm.params import MergeParams
from medslm.rundir import write_json


@dataclass(frozen=True)
class Constraint:
    """``metric`` must stay within ``fraction`` × the reference's score (at least it when higher is better, at
    most it when lower is better, as for perplexity)."""

    metric: str
    fraction: float
    higher_is_better: bool = True

    def threshold(self, reference: float) -> float:
        return self.fraction * reference

    def met(self, value: float, reference: float) -> bool:
        limit = self.threshold(reference)
        return value >= limit - 1e-12 if self.higher_is_better else value <= limit + 1e-12

    def better(self, value: float, other: float) -> bool:
        return value > other if self.higher_is_better else value < other

    def margin(self, value: float, reference: float) -> float:
        """value / threshold (higher is better) or threshold / value: ≥ 1 when met."""
        limit = self.threshold(reference)
        num, den = (value, limit) if self.higher_is_better else (limit, value)
        return num / den if den > 0 else math.inf


@dataclass(frozen=True)
class SelectionRule:
    """Best ``target`` (highest when ``maximize``) subject to ``constraints`` against the reference parent and a
    strict gain over the CPT parent on each constraint metric."""

    target: str
    maximize: bool
    constraints: tuple[Constraint, ...]
    reference_label: str = "instruct"
    parent_label: str = "cpt"

    @classmethod
    def from_params(cls, params: MergeParams, scores: str = "probes") -> SelectionRule:
        """The rule of a run: on probe accuracy (``scores='probes'``: maximise ``select_metric``, general and chat
        kept at ``min_general_fraction``/``min_chat_fraction`` of the instruct model's) or on held-out perplexity
        (``'perplexity'``: minimise medical perplexity, general perplexity ≤ (1 + ``max_general_ppl_increase``) ×
        the instruct model's)."""
        if scores == "probes":
            return cls(params.select_metric, True, (Constraint("general", params.min_general_fraction),
                                                    Constraint("chat", params.min_chat_fraction)))
        if scores == "perplexity":
            return cls("ppl_medical", False, (Constraint("ppl_general", 1.0 + params.max_general_ppl_increase, False),))
        raise ValueError(f"scores {scores!r} is not 'probes' or 'perplexity'")

    def describe(self, reference: SweepPoint) -> str:
        terms = [f"{c.metric} {'>=' if c.higher_is_better else '<='} {c.fraction:g} × {self.reference_label} "
                 f"{c.metric} ({reference.scores[c.metric]:.4g}) = {c.threshold(reference.scores[c.metric]):.4g} and "
                 f"{'above' if c.higher_is_better else 'below'} {self.parent_label}'s" for c in self.constraints]
        return (f"{'maximize' if self.maximize else 'minimize'} {self.target} over the merges (0 < t < 1) subject to "
                + ("; ".join(terms) or "no constraint"))


@dataclass
class Selection:
    """The kept point, the rule in words, whether it was a fallback and why, and every candidate's figures."""

    selected: SweepPoint
    rule: str
    fallback: bool
    note: str
    reference: SweepPoint | None = None
    constraints: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    qualified: list[float] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The content of selection.json."""
        def brief(p: SweepPoint) -> dict[str, Any]:
            return {"t": p.t, "label": p.label, "model_dir": p.model_dir, "scores": dict(p.scores)}

        return {"selected": brief(self.selected), "rule": self.rule, "constraints": self.constraints,
                "thresholds": self.thresholds, "fallback": self.fallback, "note": self.note,
                "qualified": self.qualified, "reference": brief(self.reference) if self.reference else None,
                "candidates": self.candidates}


def _find(points: Sequence[SweepPoint], label: str) -> SweepPoint | None:
    return next((p for p in points if p.label == label and not p.merged), None)


def _candidate(point: SweepPoint, rule: SelectionRule, reference: SweepPoint, parent: SweepPoint | None) -> dict[str, Any]:
    metrics = [rule.target, *(c.metric for c in rule.constraints)]
    row: dict[str, Any] = {"t": point.t, "label": point.label, "model_dir": point.model_dir,
                           "sanity_ok": point.sanity_ok is not False, **{m: point.scores.get(m) for m in metrics}}
    row["eligible"] = row["sanity_ok"] and all(point.scores.get(m) is not None for m in metrics)
    row["margin"], row["qualifies"], row["fails"] = None, False, []
    if row["eligible"]:
        row["margin"] = min((c.margin(point.scores[c.metric], reference.scores[c.metric]) for c in rule.constraints),
                            default=math.inf)
        for c in rule.constraints:
            if not c.met(point.scores[c.metric], reference.scores[c.metric]):
                row["fails"].append(f"{c.metric} {point.scores[c.metric]:.4g} misses its threshold "
                                    f"{c.threshold(reference.scores[c.metric]):.4g}")
            cpt = parent.scores.get(c.metric) if parent else None
            if cpt is not None and not c.better(point.scores[c.metric], cpt):
                row["fails"].append(f"{c.metric} {point.scores[c.metric]:.4g} not better than {rule.parent_label} "
                                    f"({cpt:.4g})")
        row["qualifies"] = not row["fails"]
    return row


def select_merge(points: Sequence[SweepPoint], rule: SelectionRule) -> Selection:
    """Apply ``rule`` (see the module docstring) to the measured ``points`` (parents included)."""
    reference, parent = _find(points, rule.reference_label), _find(points, rule.parent_label)
    if reference is None:
        raise MergeError(f"no point labelled {rule.reference_label!r} (the reference model) among the sweep points")
    missing = [c.metric for c in rule.constraints if c.metric not in reference.scores]
    if missing:
        raise MergeError(f"the {rule.reference_label} model has no {missing} score, so the rule cannot be applied; "
                         f"its scores: {sorted(reference.scores)}")
    merges = [p for p in points if p.merged and 0.0 < p.t < 1.0]
    table = [_candidate(p, rule, reference, parent) for p in merges]
    notes = []
    if parent is None:
        notes.append(f"no {rule.parent_label} point, so the strict gain over it was not checked")
    excluded = [r for r in table if not r["sanity_ok"]]
    if excluded:
        notes.append("excluded after a failed sanity check: " + ", ".join(f"t={r['t']:g}" for r in excluded))
    eligible = [r for r in table if r["eligible"]]
    qualified = [r for r in eligible if r["qualifies"]]
    sign = 1.0 if rule.maximize else -1.0
    if qualified:
        best = max(qualified, key=lambda r: (sign * r[rule.target], r["margin"], -r["t"]))
        fallback = False
        notes.insert(0, f"{len(qualified)} of {len(eligible)} merges meet the rule; t={best['t']:g} has the "
                        f"{'highest' if rule.maximize else 'lowest'} {rule.target} ({best[rule.target]:.4g})")
    elif eligible:
        best = max(eligible, key=lambda r: (r["margin"], sign * r[rule.target], -r["t"]))
        fallback = True
        notes.insert(0, f"no merge meets the rule; fell back to t={best['t']:g}, the one with the smallest shortfall "
                        f"({'; '.join(best['fails'])}). Consider smaller t values, a per-module t (self_attn/mlp), "
                        f"or keeping the {rule.reference_label} model")
    else:
        best, fallback = None, True
        notes.insert(0, f"every merge failed its sanity check or has no scores; kept the {rule.reference_label} model")
    chosen = reference if best is None else next(p for p in merges if p.model_dir == best["model_dir"])
    return Selection(
        selected=chosen, rule=rule.describe(reference), fallback=fallback, note="; ".join(notes), reference=reference,
        constraints={c.metric: c.fraction for c in rule.constraints},
        thresholds={c.metric: c.threshold(reference.scores[c.metric]) for c in rule.constraints},
        qualified=[r["t"] for r in qualified], candidates=table)


def select_nearest(points: Sequence[SweepPoint], t: float, reason: str) -> Selection:
    """A selection without scores: the merge (sanity passed) whose t is closest to the configured ``t``."""
    merged = [p for p in points if p.merged and p.sanity_ok is not False]
    if not merged:
        raise MergeError("no merge passed its sanity check; nothing to select")
    chosen = min(merged, key=lambda p: (abs(p.t - t), p.t))
    return Selection(selected=chosen, rule=f"the merge closest to the configured t={t:g}", fallback=True,
                     note=f"{reason}; kept the merge at t={chosen.t:g}", reference=_find(points, "instruct"))


def save_selection(selection: Selection, selected_dir: str | Path) -> Path:
    """Copy the chosen model folder to ``selected_dir`` (replaced atomically) with ``selection.json``."""
    selected_dir = Path(selected_dir)
    src = Path(selection.selected.model_dir)
    tmp = selected_dir.with_name(f".{selected_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("selection.json", ".*"))
    write_json(tmp / "selection.json", {**selection.as_dict(), "source_dir": str(src)})
    shutil.rmtree(selected_dir, ignore_errors=True)
    os.replace(tmp, selected_dir)
    return selected_dir


def chord_gaps(points: Sequence[SweepPoint], x: str = "general", y: str = "medical") -> dict[str, float] | None:
    """Does merging beat interpolating the scores? For each merge: its ``y`` minus the ``y`` of the straight line
    (the chord) between the two parents in the (x, y) plane, read at the merge's ``x``. Positive: the merge keeps more
    of ``y`` than a mix of the parents' scores would at the same ``x``. None without both parents' scores."""
    parents = {p.t: p.scores for p in points if not p.merged}
    start, end = parents.get(0.0, {}), parents.get(1.0, {})
    if not all(k in s for s in (start, end) for k in (x, y)) or start[x] == end[x]:
        return None
    slope = (end[y] - start[y]) / (end[x] - start[x])
    return {f"{p.t:g}": p.scores[y] - (start[y] + slope * (p.scores[x] - start[x]))
            for p in points if p.merged and x in p.scores and y in p.scores}
