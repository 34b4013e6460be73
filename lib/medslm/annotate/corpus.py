"""The corpus to annotate: documents read with ``file:line`` errors, and a seeded sample, optionally stratified by
language."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medslm.rundir import JsonlError, iter_jsonl_numbered


def iter_corpus(path: str | Path, counts: dict[str, int] | None = None, text_field: str = "text") -> Iterator[dict]:
    """Documents of a JSONL corpus. A line that is not a JSON object, lacks ``text`` or has a non-string text raises
    :class:`~medslm.rundir.JsonlError` naming ``file:line``; empty texts are skipped and counted
    (``counts["empty"]``; ``counts["read"]`` counts every record)."""
    path = Path(path)
    if counts is not None:
        counts.setdefault("read", 0)
        counts.setdefault("empty", 0)
    for lineno, rec in iter_jsonl_numbered(path):
        if text_field not in rec:
            raise JsonlError(f"{path}:{lineno}: no {text_field!r} field; present: {', '.join(rec) or 'none'}")
        text = rec[text_field]
        if text is not None and not isinstance(text, str):
            raise JsonlError(f"{path}:{lineno}: {text_field!r} is a {type(text).__name__}, not a string")
        if counts is not None:
            counts["read"] += 1
        if not text or not text.strip():
            if counts is not None:
                counts["empty"] += 1
            continue
        if text_field != "text":
            rec["text"] = text
        yield rec


def sample_documents(path: str | Path, n: int, seed: int = 0, stratify_by_language: bool = False,
                     lang_field: str = "lang") -> tuple[list[dict], dict[str, Any]]:
    """A seeded sample of ``n`` documents (reservoir sampling, one pass, corpus order kept).

    With ``stratify_by_language`` each language gets its corpus share of the sample (largest remainders), which
    keeps a small language from being under- or over-drawn by chance. Returns ``(documents, stats)`` with stats
    ``read``, ``empty`` (skipped), ``eligible``, ``sampled`` and ``per_language`` (corpus and sample counts).
    """
    if n <= 0:
        raise ValueError(f"sample size must be positive, got {n}")
    rng = random.Random(f"sample:{seed}")
    counts: dict[str, int] = {}
    reservoirs: dict[str, list[tuple[int, dict]]] = {}
    seen: Counter[str] = Counter()
    for idx, rec in enumerate(iter_corpus(path, counts)):
        group = str(rec.get(lang_field) or "unknown") if stratify_by_language else "all"
        seen[group] += 1
        res = reservoirs.setdefault(group, [])
        if len(res) < n:
            res.append((idx, rec))
        else:
            j = rng.randrange(seen[group])
            if j < n:
                res[j] = (idx, rec)
    eligible = sum(seen.values())
    take = _allocate(seen, min(n, eligible)) if stratify_by_language else {"all": min(n, eligible)}
    chosen: list[tuple[int, dict]] = []
    for group, k in take.items():
        res = reservoirs.get(group, [])
        chosen += rng.sample(res, k) if k < len(res) else res
    chosen.sort(key=lambda x: x[0])
    docs = [rec for _, rec in chosen]
    per_lang_corpus: Counter[str] = Counter()
    if stratify_by_language:
        per_lang_corpus.update(seen)
    stats = {
        "read": counts.get("read", 0), "empty": counts.get("empty", 0), "eligible": eligible, "sampled": len(docs),
        "seed": seed, "stratified": stratify_by_language,
        "per_language": {"sample": dict(sorted(Counter(str(d.get(lang_field) or "unknown") for d in docs).items())),
                         **({"corpus": dict(sorted(per_lang_corpus.items()))} if stratify_by_language else {})},
    }
    return docs, stats


def _allocate(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """Split ``n`` over groups in proportion to ``sizes`` (largest remainders)."""
    total = sum(sizes.values())
    if total == 0:
        return {}
    exact = {g: n * s / total for g, s in sizes.items()}
    out = {g: min(sizes[g], math.floor(x)) for g, x in exact.items()}
    for g in sorted(exact, key=lambda g: exact[g] - math.floor(exact[g]), reverse=True):
        if sum(out.values()) >= n:
            break
        if out[g] < sizes[g]:
            out[g] += 1
    return out
