"""The annotated sample: labels read back, a stratified train/validation split (with a clear error when a class
has too few documents), targets and clipped texts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medslm.annotate import LABELS
from medslm.rundir import read_jsonl


class TooFewLabelsError(ValueError):
    """A class has too few labelled documents to train and validate a classifier."""


def load_labels(path: str | Path) -> tuple[list[dict], dict[str, int]]:
    """The labelled documents of 01_annotate (``labels.jsonl``: ``text`` and ``label``) the classifier may train
    and validate on; unparseable ones (label null) are left out and counted, and so are documents of the toy
    world's held-out sentence families (``held_out: true``), on which 02 reports the filter apart. Returns
    ``(records, counts)`` with counts per label, ``unparseable`` and ``held_out``."""
    recs = read_jsonl(path, required=("text", "label"))
    held_out = [r for r in recs if r.get("held_out") is True]
    kept = [r for r in recs if r["label"] in LABELS and isinstance(r["text"], str) and r["text"].strip()
            and r.get("held_out") is not True]
    counts = {lab: sum(r["label"] == lab for r in kept) for lab in LABELS}
    counts["unparseable"] = sum(r["label"] is None and r.get("held_out") is not True for r in recs)
    counts["held_out"] = len(held_out)
    return kept, counts


def label_counts(labels: Iterable[str | None]) -> dict[str, int]:
    c = Counter(labels)
    return {lab: c.get(lab, 0) for lab in LABELS}


def split_labels(records: Sequence[Mapping[str, Any]], validation_fraction: float = 0.25, seed: int = 0,
                 min_per_class: int = 20) -> tuple[list[dict], list[dict]]:
    """Stratified train/validation split. Raises :class:`TooFewLabelsError` naming how many documents of each
    class there are when either class has fewer than ``min_per_class`` (at least 2 per split are needed)."""
    from sklearn.model_selection import train_test_split

    counts = label_counts(r["label"] for r in records)
    need = max(min_per_class, 2, math.ceil(2 / max(validation_fraction, 1e-9)))
    short = [lab for lab in LABELS if counts[lab] < need]
    if short:
        have = ", ".join(f"{lab}: {counts[lab]}" for lab in LABELS)
        raise TooFewLabelsError(
            f"too few labelled documents to train: {have} (need at least {need} of each class, "
            f"min_per_class={min_per_class}, validation_fraction={validation_fraction}); "
            f"short: {', '.join(short)}. Annotate a larger sample (annotate.sample_size) or check the annotator's "
            "label distribution and unparseable rate.")
    y = [r["label"] for r in records]
    train, val = train_test_split(list(records), test_size=validation_fraction, random_state=seed, stratify=y)
    return [dict(r) for r in train], [dict(r) for r in val]


def targets(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """1 for medical, 0 for not_medical."""
    return np.array([r["label"] == "medical" for r in records], dtype=np.int64)


def clip(texts: Iterable[str], max_chars: int | None) -> list[str]:
    return [t[:max_chars] if max_chars else t for t in texts]


# --------------------------------------------------------------------------------------------------------------
