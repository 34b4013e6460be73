"""Forgetting: how much each variant lost on general and chat probes (or a general benchmark) against a reference.

Input: ``{variant: {benchmark: score}}`` with scores where higher is better (accuracies of 07). The drop is
``reference − variant`` (positive = forgotten), also relative to the reference; ``forgot`` marks drops above a
tolerance. The seeds' story: CPT forgets, a merge restores part of it — ``restored_share`` measures that part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ForgettingRow:
    """One variant on one benchmark against the reference variant."""

    variant: str
    benchmark: str
    score: float
    reference_score: float
    drop: float
    relative_drop: float | None  # None when the reference scored 0
    forgot: bool


def forgetting_table(scores: Mapping[str, Mapping[str, float]], reference: str = "instruct",
                     benchmarks: list[str] | None = None, tolerance: float = 0.02) -> list[ForgettingRow]:
    """Drop of each variant's score on each benchmark (``benchmarks``: default those of the reference) against
    ``reference``; variants lacking a benchmark are skipped for it."""
    if reference not in scores:
        raise ValueError(f"reference variant {reference!r} has no scores; variants with scores: "
                         f"{', '.join(sorted(scores)) or 'none'} (set forgetting_reference to one of them)")
    names = benchmarks if benchmarks is not None else sorted(scores[reference])
    missing = [b for b in names if b not in scores[reference]]
    if missing:
        raise ValueError(f"reference variant {reference!r} has no score for {', '.join(missing)}; "
                         f"it has {', '.join(sorted(scores[reference]))}")
    rows = []
    for variant, values in scores.items():
        for bench in names:
            if bench not in values:
                continue
            ref, score = float(scores[reference][bench]), float(values[bench])
            drop = ref - score
            rows.append(ForgettingRow(variant, bench, score, ref, drop, drop / ref if ref else None, drop > tolerance))
    return rows


def restored_share(reference: float, forgetful: float, repaired: float) -> float | None:
    """Share of the drop ``reference − forgetful`` that ``repaired`` won back (1 = all, 0 = none, < 0 = worse);
    None when nothing was lost."""
    lost = reference - forgetful
    return (repaired - forgetful) / lost if lost > 0 else None
