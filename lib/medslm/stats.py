"""Descriptive statistics of corpora and tokenizers (plain dicts, for metrics.json and plots), and seeded samples."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def seeded_sample(items: Sequence[T], n: int, salt: str) -> list[T]:
    """``n`` of ``items`` drawn with ``random.Random(salt)`` (all of them, in order, when there are no more than n):
    the same sample on every call with the same salt, e.g. ``"benchmark:<seed>"``."""
    if len(items) <= n:
        return list(items)
    return random.Random(salt).sample(list(items), n)


def corpus_stats(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Documents per language, per kind (when records have one) and per kind/language; character lengths."""
    per_lang: Counter[str] = Counter()
    per_kind: Counter[str] = Counter()
    per_kind_lang: Counter[str] = Counter()
    lengths = []
    for rec in records:
        lang, kind = str(rec.get("lang", "?")), str(rec.get("kind", "all"))
        per_lang[lang] += 1
        per_kind[kind] += 1
        per_kind_lang[f"{kind}/{lang}"] += 1
        lengths.append(len(rec["text"]))
    return {
        "documents": len(lengths),
        "characters": sum(lengths),
        "per_lang": dict(sorted(per_lang.items())),
        "per_kind": dict(sorted(per_kind.items())),
        "per_kind_lang": dict(sorted(per_kind_lang.items())),
        "mean_chars": sum(lengths) / len(lengths) if lengths else 0.0,
        "lengths": lengths,
    }


def tokenizer_stats(tokenizer: Any, records: list[dict[str, Any]], sample: int = 500) -> dict[str, Any]:
    """Vocabulary size and, per language, tokens per document and characters per token on a sample."""
    out: dict[str, Any] = {"vocab_size": len(tokenizer), "per_lang": {}}
    by_lang: dict[str, list[str]] = {}
    for rec in records[:sample]:
        by_lang.setdefault(str(rec.get("lang", "?")), []).append(rec["text"])
    for lang, texts in sorted(by_lang.items()):
        n_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        n_chars = sum(len(t) for t in texts)
        out["per_lang"][lang] = {
            "documents": len(texts),
            "tokens_per_document": n_tokens / len(texts),
            "chars_per_token": n_chars / max(n_tokens, 1),
        }
    return out
