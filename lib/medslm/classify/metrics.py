"""The threshold that reaches a target precision on validation, the confusion of a filter, and the annotator and
the filter against gold labels (the filter itself lives in :mod:`medslm.filtering`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medslm.classify.labels import TooFewLabelsError

# Threshold at a target precision
# --------------------------------------------------------------------------------------------------------------


def choose_threshold(y_true: Sequence[int], scores: Sequence[float], target_precision: float = 0.95) -> dict[str, Any]:
    """The probability threshold that reaches ``target_precision`` on validation with the highest recall.

    Returns ``threshold``, ``precision``, ``recall``, ``reached`` (False: no threshold reaches the target; the
    threshold of the best precision is returned instead), ``kept`` and ``curve`` (precision, recall, thresholds
    as lists, for the figure). ``threshold`` keeps documents with ``score >= threshold``.
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.sum() == 0:
        raise TooFewLabelsError("the validation set has no medical document; cannot pick a threshold")
    precision, recall, thresholds = precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    ok = np.flatnonzero(p >= target_precision)
    if len(ok):
        best = ok[np.argmax(r[ok] + 1e-9 * thresholds[ok])]  # highest recall; on ties the higher threshold
        reached = True
    else:
        best = int(np.argmax(p + 1e-9 * r))
        reached = False
    thr = float(thresholds[best])
    kept = s >= thr
    return {
        "threshold": thr, "target_precision": target_precision, "reached": reached,
        "precision": round(float(p[best]), 4), "recall": round(float(r[best]), 4),
        "kept": int(kept.sum()), "validation_documents": len(y), "validation_medical": int(y.sum()),
        "confusion": confusion(y, kept),
        "curve": {"precision": precision.tolist(), "recall": recall.tolist(), "thresholds": thresholds.tolist()},
    }


def confusion(y_true: Sequence[int], kept: Sequence[bool]) -> dict[str, Any]:
    """2×2 confusion matrix, rows gold (medical, not_medical), columns kept / dropped."""
    y = np.asarray(y_true, dtype=bool)
    k = np.asarray(kept, dtype=bool)
    return {"rows": ["medical", "not_medical"], "columns": ["kept", "dropped"],
            "matrix": [[int((y & k).sum()), int((y & ~k).sum())], [int((~y & k).sum()), int((~y & ~k).sum())]]}


def gold_comparison(annotator: Mapping[str, Any] | None, filter_stats: Mapping[str, Any] | None) -> list[dict]:
    """Rows for a table of the annotator (on its sample) and the classifier filter (on the full corpus) against
    gold labels, each also on the held-out sentence families alone where known: who, documents, precision,
    recall, f1. Takes ``annotation_report(...)`` and ``score_corpus(...)``."""
    rows = []
    for who, src in (("annotator (sample)", annotator), ("classifier filter (full corpus)", filter_stats)):
        for suffix, key in (("", "gold"), (", held-out families", "gold_held_out")):
            g = (src or {}).get(key)
            if g:
                rows.append({"who": who + suffix, "documents": g["n"], "precision": g["precision"],
                             "recall": g["recall"], "f1": g["f1"]})
    return rows
