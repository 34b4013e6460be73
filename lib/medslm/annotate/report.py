"""What the labels say: against gold labels (precision, recall, F1, confusion), per language and family, and the
guard that stops a run whose annotator replies cannot be read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medslm.annotate.rubric import LABELS
from medslm.rundir import JsonlError, iter_jsonl_numbered


def load_gold(path: str | Path) -> dict[str, str]:
    """Human labels from JSONL ``{"id", "label"}`` with label medical/not_medical (also true/false, 1/0)."""
    gold: dict[str, str] = {}
    path = Path(path)
    for lineno, rec in iter_jsonl_numbered(path):
        if "id" not in rec or "label" not in rec:
            raise JsonlError(f"{path}:{lineno}: a gold record needs 'id' and 'label' fields")
        value = rec["label"]
        if isinstance(value, str):
            value = value.strip().lower().replace(" ", "_").replace("-", "_")
        if value in ("medical", True, 1, "1", "true", "yes"):
            gold[str(rec["id"])] = "medical"
        elif value in ("not_medical", False, 0, "0", "false", "no", "non_medical"):
            gold[str(rec["id"])] = "not_medical"
        else:
            raise JsonlError(f"{path}:{lineno}: label {rec['label']!r} is not medical or not_medical")
    return gold


def binary_metrics(gold: Sequence[str], predicted: Sequence[str | None]) -> dict[str, Any]:
    """Precision, recall and F1 of the class ``medical`` and the confusion matrix (rows gold medical,
    not_medical; columns predicted medical, not_medical, unparseable). An unparseable prediction (None) counts as
    not predicting medical: it lowers recall, never raises precision."""
    m = {(g, p): 0 for g in LABELS for p in (*LABELS, None)}
    for g, p in zip(gold, predicted, strict=True):
        m[(g, p)] += 1
    tp, fp = m[("medical", "medical")], m[("not_medical", "medical")]
    fn = m[("medical", "not_medical")] + m[("medical", None)]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(gold)
    correct = tp + m[("not_medical", "not_medical")]
    return {
        "n": n, "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
        "accuracy": round(correct / n, 4) if n else 0.0,
        "confusion": {"rows": list(LABELS), "columns": [*LABELS, "unparseable"],
                      "matrix": [[m[(g, p)] for p in (*LABELS, None)] for g in LABELS]},
    }


def annotation_report(labels: Sequence[Mapping[str, Any]], stats: Mapping[str, Any] | None = None,
                      gold: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Label distribution, unparseable count/rate (with reasons and examples), quality histogram, throughput and —
    when gold labels exist (``gold`` by id, else the ``gold`` field of the labels) — precision, recall, F1 and the
    confusion matrix, overall and per language, on the development and the held-out sentence families apart
    (``gold_development``, ``gold_held_out``: toy world), plus the share labelled medical per document kind."""
    n = len(labels)
    dist = Counter(r["label"] if r["label"] is not None else "unparseable" for r in labels)
    unparseable = [r for r in labels if r["label"] is None]
    report: dict[str, Any] = {
        "documents": n,
        "label_distribution": {k: dist.get(k, 0) for k in (*LABELS, "unparseable")},
        "unparseable": len(unparseable),
        "unparseable_rate": round(len(unparseable) / n, 4) if n else 0.0,
        "unparseable_reasons": dict(Counter(r.get("reason") or "?" for r in unparseable).most_common(10)),
        "unparseable_examples": [{"id": r["id"], "reply": (r.get("reply") or "")[:200]} for r in unparseable[:5]],
        "quality_histogram": dict(sorted(Counter(r["quality"] for r in labels if r.get("quality") is not None).items())),
        "prompt_versions": sorted({r["prompt_version"] for r in labels}),
    }
    if stats:
        report["throughput"] = {k: stats.get(k) for k in ("documents", "cached", "calls", "seconds", "docs_per_s",
                                                           "backend_docs_per_s")}
    pairs = []
    for r in labels:
        g = gold.get(str(r["id"])) if gold is not None else r.get("gold")
        if g in LABELS:
            pairs.append((r, g))
    if pairs:
        report["gold"] = binary_metrics([g for _, g in pairs], [r["label"] for r, _ in pairs])
        report["gold"]["source"] = "gold_file" if gold is not None else "corpus"
        langs = sorted({str(r.get("lang")) for r, _ in pairs if r.get("lang")})
        report["gold_per_language"] = {
            lang: binary_metrics([g for r, g in pairs if r.get("lang") == lang],
                                 [r["label"] for r, _ in pairs if r.get("lang") == lang]) for lang in langs}
        for key, held in (("gold_development", False), ("gold_held_out", True)):
            part = [(r, g) for r, g in pairs if "held_out" in r and bool(r["held_out"]) == held]
            if part:
                report[key] = binary_metrics([g for _, g in part], [r["label"] for r, _ in part])
        kinds = sorted({str(r["kind"]) for r, _ in pairs if r.get("kind")})
        if kinds:
            report["medical_share_per_kind"] = {
                k: round(sum(r["label"] == "medical" for r, _ in pairs if r.get("kind") == k)
                         / max(1, sum(r.get("kind") == k for r, _ in pairs)), 4) for k in kinds}
    return report


class UnparseableRepliesError(RuntimeError):
    """Too many annotator replies have no valid verdict line: the labels would be too few or biased."""


_ADVICE = {
    "transformers": "backend: loglik (the same model scores the verdict as a choice by log-likelihood and cannot "
                    "fail to parse); a larger instruct model; more max_new_tokens, so the reply reaches its verdict "
                    "line; a tokenizer whose chat template fits the model",
    "openai": "a model that follows the format (larger, or instruction-tuned); temperature 0; more max_new_tokens, "
              "so the reply reaches its verdict line; for a local model, backend: loglik",
}


def check_unparseable(labels: Sequence[Mapping[str, Any]], max_rate: float, backend: str = "") -> None:
    """Raise :class:`UnparseableRepliesError` when more than ``max_rate`` of ``labels`` are unparseable; the message
    gives the rate, the reasons, three example replies and what to try for ``backend``."""
    bad = [r for r in labels if r.get("label") is None]
    rate = len(bad) / len(labels) if labels else 0.0
    if rate <= max_rate:
        return
    reasons = ", ".join(f"{reason}: {n}" for reason, n in Counter(r.get("reason") or "?" for r in bad).most_common(3))
    examples = "\n".join(f"  - document {r.get('id')}: {(r.get('reply') or '')[:200]!r}" for r in bad[:3])
    advice = _ADVICE.get(backend, "a model that follows the reply format, or backend: loglik for a local model")
    raise UnparseableRepliesError(
        f"{len(bad)} of {len(labels)} annotator replies ({rate:.0%}) have no valid 'Verdict: medical' or "
        f"'Verdict: not_medical' line, more than max_unparseable_rate={max_rate} ({reasons}). Examples:\n{examples}\n"
        f"What to try: {advice}. All replies are in labels.jsonl (field reply).")
