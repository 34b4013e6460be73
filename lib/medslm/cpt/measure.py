"""03_cpt's measurements before and after: probes (toy world), perplexity on held-out medical and general text
(any corpus), and forgetting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def evaluate_model(model: Any, tokenizer: Any, probes: Sequence[dict[str, Any]] | None = None,
                   heldout: Sequence[dict[str, Any]] | None = None, corpus_heldout: Sequence[str] | None = None,
                   general_heldout: Sequence[str] | None = None, max_texts: int = 400) -> dict[str, Any]:
    """``{"probes": evaluate_probes(...), "perplexity": {"medical", "general", "corpus_heldout",
    "general_heldout"}}`` — each part only when its data is given; at most ``max_texts`` texts per perplexity.
    ``heldout``: the toy world's held-out sentences; ``corpus_heldout``: held-out documents of the filtered corpus
    (medical text); ``general_heldout``: rejected documents never trained on (general text, any corpus)."""
    from medslm.evaluate import evaluate_probes, heldout_perplexity, perplexity

    out: dict[str, Any] = {}
    if probes:
        out["probes"] = evaluate_probes(model, tokenizer, probes)
    ppl: dict[str, float] = {}
    if heldout:
        ppl.update(heldout_perplexity(model, tokenizer, heldout, max_texts=max_texts))
    if corpus_heldout:
        ppl["corpus_heldout"] = perplexity(model, tokenizer, list(corpus_heldout)[:max_texts])
    if general_heldout:
        ppl["general_heldout"] = perplexity(model, tokenizer, list(general_heldout)[:max_texts])
    if ppl:
        out["perplexity"] = ppl
    return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Before/after metrics plus ``delta`` (after − before, probes and perplexities) and ``forgetting``: the drop
    of the general and chat probe accuracies (before − after; positive = knowledge lost) and the ratio of general
    perplexity (after / before; above 1 = worse)."""
    delta: dict[str, dict[str, float]] = {}
    for part in ("probes", "perplexity"):
        b, a = before.get(part, {}), after.get(part, {})
        keys = [k for k in a if k in b and isinstance(a[k], (int, float)) and isinstance(b[k], (int, float))]
        if keys:
            delta[part] = {k: a[k] - b[k] for k in keys}
    forgetting: dict[str, float] = {}
    for g in ("general", "chat"):
        if g in before.get("probes", {}) and g in after.get("probes", {}):
            forgetting[g] = before["probes"][g] - after["probes"][g]
    for key in ("general", "general_heldout"):
        if key in before.get("perplexity", {}) and key in after.get("perplexity", {}):
            forgetting[f"{key}_perplexity_ratio"] = after["perplexity"][key] / before["perplexity"][key]
    return {"before": before, "after": after, "delta": delta, "forgetting": forgetting}




def comparison_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """The numeric before/after figures of :func:`compare` as table rows ``{part, metric, before, after}``."""
    rows = []
    for part in ("probes", "perplexity"):
        before, after = comparison["before"].get(part, {}), comparison["after"].get(part, {})
        rows += [{"part": part, "metric": k, "before": before[k], "after": v} for k, v in after.items()
                 if isinstance(v, int | float) and isinstance(before.get(k), int | float)]
    return rows
