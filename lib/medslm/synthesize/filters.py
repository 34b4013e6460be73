"""Filters of the teacher's answers, each switchable and counted: JSON schema validity, language identification,
length bounds per task, exact and near-duplicate removal, and an optional judge.

Verdicts per example are ``pass``, ``removed`` or ``n/a`` (not applicable or switched off). JSON, language and
length verdicts are computed for every example (so each filter can be measured against the injected faults);
deduplication and the judge see only what the earlier filters kept. The funnel charges each removed example to the
first filter, in this order, that removed it.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections import defaultdict
from typing import Any

from jsonschema import Draft202012Validator

from medslm.synthesize.faults import split_sentences, words
from medslm.synthesize.grid import Example
from medslm.synthesize.tasks import Task

FILTERS = ("json", "language", "length", "dedup", "judge")


# --------------------------------------------------------------------------------------------------------------
# What an answer says
# --------------------------------------------------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def prose_of(example: Example) -> list[str]:
    """The answer's sentences: a text answer's, or those of a JSON answer's string values (raw text if not JSON)."""
    answer = example.answer or ""
    pieces = [answer]
    if example.format == "json":
        try:
            pieces = _strings(json.loads(answer))
        except json.JSONDecodeError:
            pass
    return [s for piece in pieces for s in split_sentences(piece)]


# --------------------------------------------------------------------------------------------------------------
# The filters
# --------------------------------------------------------------------------------------------------------------


def json_verdict(example: Example, validator: Draft202012Validator) -> str:
    if example.format != "json":
        return "n/a"
    try:
        obj = json.loads(example.answer or "")
    except json.JSONDecodeError:
        return "removed"
    return "pass" if validator.is_valid(obj) else "removed"


class LanguageFilter:
    """Share of an answer's words in sentences identified as another language (lingua, restricted to the run's
    languages and loaded once). Sentences shorter than ``min_sentence_words`` words are not judged; a sentence counts
    as foreign when lingua's top language is another one with confidence ≥ ``min_confidence``."""

    def __init__(self, languages: list[str], min_sentence_words: int = 5, max_foreign_share: float = 0.0,
                 min_confidence: float = 0.7):
        from medslm.language import lingua_detector, lingua_language

        self.detector = lingua_detector(languages)
        self.codes = {lingua_language(lang): lang for lang in languages}
        self.min_sentence_words, self.max_foreign_share = min_sentence_words, max_foreign_share
        self.min_confidence = min_confidence

    def foreign_shares(self, answers: list[list[str]], expected: list[str]) -> list[float | None]:
        """Per answer (a list of sentences): share of judged words in another language, None if nothing judged."""
        sentences, owners = [], []
        for i, answer in enumerate(answers):
            for sentence in answer:
                tokens = words(sentence)
                if len(tokens) >= self.min_sentence_words:
                    sentences.append(" ".join(tokens))
                    owners.append((i, len(tokens)))
        unique = list(dict.fromkeys(sentences))  # templated answers repeat sentences: ask lingua once each
        ranked = dict(zip(unique, self.detector.compute_language_confidence_values_in_parallel(unique), strict=True))
        judged, foreign = [0] * len(answers), [0] * len(answers)
        for sentence, (i, n) in zip(sentences, owners, strict=True):
            judged[i] += n
            top = ranked[sentence][0]
            if self.codes[top.language] != expected[i] and top.value >= self.min_confidence:
                foreign[i] += n
        return [foreign[i] / judged[i] if judged[i] else None for i in range(len(answers))]

    def verdicts(self, examples: list[Example]) -> list[str]:
        shares = self.foreign_shares([prose_of(e) for e in examples], [e.answer_lang for e in examples])
        return ["n/a" if s is None else ("removed" if s > self.max_foreign_share else "pass") for s in shares]


def length_verdict(example: Example, task: Task, slack: float) -> str:
    low, high = task.length_bounds(example.item, slack)
    n = sum(len(s.split()) for s in prose_of(example))
    return "pass" if low <= n <= high else "removed"


def _crc32(data: bytes) -> int:
    return zlib.crc32(data)  # deterministic and fast (datasketch's default sha1 costs ~4 µs per shingle)


def _shingles(text: str, k: int = 5) -> set[bytes]:
    data = re.sub(r"\s+", " ", text.lower()).strip().encode()
    return {data[i:i + k] for i in range(max(1, len(data) - k + 1))}


def dedup_verdicts(examples: list[Example], threshold: float = 0.9, num_perm: int = 128) -> dict[str, str]:
    """Exact (same prompt and answer) and near duplicates (MinHash LSH on character 5-grams, estimated Jaccard
    ≥ ``threshold``) within each (task, format, language) bucket; the first of a group stays."""
    from datasketch import MinHash, MinHashLSH

    buckets: dict[tuple[str, str, str], list[Example]] = defaultdict(list)
    for e in examples:
        buckets[(e.task, e.format, e.prompt_lang)].append(e)
    out = {}
    bands = MinHashLSH(threshold=threshold, num_perm=num_perm)  # solve for (bands, rows) once, not per bucket
    for bucket in buckets.values():
        texts = [e.messages[-1]["content"] + "\n" + (e.answer or "") for e in bucket]
        hashes = MinHash.bulk([list(_shingles(t)) for t in texts], num_perm=num_perm, hashfunc=_crc32)
        by_id = {e.id: h for e, h in zip(bucket, hashes, strict=True)}
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands.b, bands.r))
        seen: set[str] = set()
        for e, text, mh in zip(bucket, texts, hashes, strict=True):
            digest = hashlib.sha256(re.sub(r"\s+", " ", text.strip()).encode()).hexdigest()
            if digest in seen or any(mh.jaccard(by_id[other]) >= threshold for other in lsh.query(mh)):
                out[e.id] = "removed"
                continue
            seen.add(digest)
            lsh.insert(e.id, mh)
            out[e.id] = "pass"
    return out
