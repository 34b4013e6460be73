"""06_align's data: 05_synthesize's conversational files, checked before any training starts.

SFT rows are ``{"messages": [{"role", "content"}, ...]}``; DPO rows are ``{"prompt": [...], "chosen": [...],
"rejected": [...]}`` in trl's conversational preference form. Every problem names the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medslm.rundir import JsonlError, iter_jsonl_numbered

ROLES = ("system", "user", "assistant")
GENERATION_MARKER = "{% generation %}"
UNLABELLED = "unlabelled"  # the rejection kind of a DPO row that names none


def _check_messages(value: Any, where: str, field: str, need_assistant: bool) -> None:
    if not isinstance(value, list) or not value:
        raise JsonlError(f"{where}: field {field!r} must be a non-empty list of {{role, content}} messages, got {value!r:.80}")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise JsonlError(f"{where}: {field}[{i}] must be {{role: one of {', '.join(ROLES)}, content: text}}, "
                             f"got {message!r:.80}")
    if need_assistant and not any(m["role"] == "assistant" for m in value):
        raise JsonlError(f"{where}: {field!r} has no assistant message: nothing to learn from")


def read_sft_rows(path: str | Path) -> list[dict[str, Any]]:
    """SFT rows with valid ``messages`` (other fields, e.g. provenance, are kept); raises naming file:line."""
    rows = []
    for line, row in iter_jsonl_numbered(path, required=("messages",)):
        _check_messages(row["messages"], f"{path}:{line}", "messages", need_assistant=True)
        rows.append(row)
    if not rows:
        raise JsonlError(f"{path}: no SFT examples")
    return rows


def read_dpo_rows(path: str | Path) -> list[dict[str, Any]]:
    """DPO rows (conversational prompt/chosen/rejected); a chosen answer equal to its rejected one is an error."""
    rows = []
    for line, row in iter_jsonl_numbered(path, required=("prompt", "chosen", "rejected")):
        where = f"{path}:{line}"
        _check_messages(row["prompt"], where, "prompt", need_assistant=False)
        for field in ("chosen", "rejected"):
            _check_messages(row[field], where, field, need_assistant=True)
        if row["chosen"] == row["rejected"]:
            raise JsonlError(f"{where}: 'chosen' is identical to 'rejected' ({row['chosen'][-1]['content']!r:.80}): "
                             "such a pair teaches nothing")
        rows.append(row)
    if not rows:
        raise JsonlError(f"{path}: no preference pairs")
    return rows


def as_dataset(rows: list[dict[str, Any]], fields: tuple[str, ...]):
    """A ``datasets.Dataset`` with only the training ``fields`` (trl reads them directly)."""
    from datasets import Dataset

    return Dataset.from_list([{k: row[k] for k in fields} for row in rows])


def by_rejection(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """DPO rows grouped by what made the rejected answer worse (05_synthesize's ``rejection`` field: wrong_fact,
    verbose, wrong_language, …; ``unlabelled`` for rows without one), kinds in sorted order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("rejection") or UNLABELLED), []).append(row)
    return dict(sorted(groups.items()))


def rendered_lengths(tokenizer: Any, conversations: list[list[dict[str, str]]]) -> list[int]:
    """Tokens of each conversation rendered through the chat template (what trl tokenizes and trains on)."""
    return [len(ids) for ids in tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=False)]


def training_lengths(tokenizer: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Tokens per training example: an SFT conversation, or a DPO pair's longer side (prompt + chosen/rejected)."""
    if "messages" in rows[0]:
        return rendered_lengths(tokenizer, [row["messages"] for row in rows])
    sides = [rendered_lengths(tokenizer, [row["prompt"] + row[side] for row in rows]) for side in ("chosen", "rejected")]
    return [max(pair) for pair in zip(*sides, strict=True)]


def length_report(lengths: list[int], max_length: int | None) -> dict[str, Any]:
    """How many examples trl will cut at ``max_length`` (their answers lose their end), and the longest."""
    over = sum(n > max_length for n in lengths) if max_length else 0
    return {"examples": len(lengths), "over_max_length": over, "longest": max(lengths, default=0),
            "max_length": max_length}


def check_chat_template(tokenizer: Any, assistant_only_loss: bool) -> None:
    """assistant_only_loss needs ``{% generation %}`` markers in the chat template (trl masks by them)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError("the tokenizer has no chat template: conversational SFT/DPO data cannot be rendered")
    if assistant_only_loss and GENERATION_MARKER not in template.replace("{%- generation %}", GENERATION_MARKER):
        raise ValueError(
            "assistant_only_loss is on but the chat template has no {% generation %} ... {% endgeneration %} "
            "markers, so trl cannot tell assistant tokens apart. Set assistant_only_loss: false, add the markers "
            "to the template (see medslm.toyworld.tokenizer.CHAT_TEMPLATE), or convert the data to "
            "prompt/completion form (completion-only loss)."
        )
