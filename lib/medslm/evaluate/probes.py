"""The toy world's knowledge probes (and any benchmark in the same record format), scored by :func:`score_mcq`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medslm.evaluate.mcq import accuracy, score_mcq

PROBE_GROUPS = ("medical", "general", "chat")


def probe_group(rec: dict[str, Any]) -> str:
    """The headline group of a probe record: ``chat`` for chat probes, else its domain (medical/general)."""
    return "chat" if rec.get("probe") == "chat" else rec["domain"]


def evaluate_probes(model: Any, tokenizer: Any, probes: Sequence[dict[str, Any]], batch_size: int = 64,
                    progress: bool = False, add_bos_token: bool | None = None) -> dict[str, Any]:
    """Accuracy on the probes: headline ``medical``/``general``/``chat`` (acc) plus acc/acc_norm per group,
    language and relation."""
    return probe_accuracy(score_mcq(model, tokenizer, probes, batch_size=batch_size, progress=progress,
                                    add_bos_token=add_bos_token))


def probe_accuracy(results: Sequence[Any]) -> dict[str, Any]:
    """Headline ``medical``/``general``/``chat`` accuracy of scored probes, plus acc/acc_norm per group, language and
    relation (``detail``)."""
    for r in results:
        r.item.meta["group"] = probe_group({**r.item.meta})
    by_group = accuracy(results, by=("group",))
    out: dict[str, Any] = {g: by_group[g]["acc"] for g in PROBE_GROUPS if g in by_group}
    out["detail"] = {
        "group": {k: v for k, v in by_group.items() if k != "all"},
        "group_lang": {k: v for k, v in accuracy(results, by=("group", "lang")).items() if k != "all"},
        "relation": {k: v for k, v in accuracy(results, by=("relation",)).items() if k != "all"},
    }
    return out
