"""Scores of generated answers against references: pure functions over (prediction, reference, schema).

* ``exact_match`` — after SQuAD-style normalisation (lower case, punctuation and English/German articles removed,
  whitespace collapsed);
* ``token_f1`` — SQuAD token-overlap F1 on the same normalisation;
* ``rouge_l`` — ROUGE-L F-measure from Google's ``rouge-score`` (no stemming: the Porter stemmer is English-only
  and would treat German and English unequally; tokens are lower-cased alphanumerics with umlauts kept);
* ``json_valid`` / ``json_field_accuracy`` — the prediction parses as a JSON object (a fenced code block is
  unwrapped) and validates against the task's JSON schema (``jsonschema``); field accuracy = share of the
  reference's fields whose normalised values the prediction matches.

:func:`score_task` averages them per task over records ``{"task", "prediction", "reference", "schema"?}``.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

ARTICLES = {"a", "an", "the", "der", "die", "das", "ein", "eine", "einen", "einem", "einer", "eines", "den", "dem",
            "des"}
_PUNCT = str.maketrans("", "", string.punctuation + "„“”‚‘’«»–—")


def normalize(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed (SQuAD's normalize_answer, DE articles)."""
    words = str(text).lower().translate(_PUNCT).split()
    return " ".join(w for w in words if w not in ARTICLES)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class _UnicodeTokenizer:
    """rouge-score tokenizer that keeps non-ASCII letters (its default drops ``ä``, ``ß``)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


def rouge_l(prediction: str, reference: str) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_UnicodeTokenizer())
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)


def parse_json_object(prediction: str) -> dict[str, Any] | None:
    """The JSON object in ``prediction`` (whole text, or the first fenced code block); None if there is none."""
    text = prediction.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def json_valid(prediction: str, schema: dict[str, Any] | None = None) -> float:
    """1.0 if the prediction is a JSON object that validates against ``schema`` (any object when None)."""
    obj = parse_json_object(prediction)
    if obj is None:
        return 0.0
    if schema is None:
        return 1.0
    import jsonschema

    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError:
        return 0.0
    return 1.0


def json_field_accuracy(prediction: str, reference: dict[str, Any] | str) -> float:
    """Share of the reference object's fields that the predicted object has with an equal (normalised) value."""
    ref = parse_json_object(reference) if isinstance(reference, str) else reference
    if not ref:
        raise ValueError(f"the reference must be a non-empty JSON object, got {reference!r}")
    obj = parse_json_object(prediction) or {}

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, str) and isinstance(b, str):
            return normalize(a) == normalize(b)
        return a == b

    return sum(key in obj and same(obj[key], value) for key, value in ref.items()) / len(ref)


def score_record(prediction: str, reference: Any, schema: dict[str, Any] | None = None) -> dict[str, float]:
    """Every applicable score of one answer: text scores for a text reference; JSON scores for a JSON reference
    (an object, or a string that parses as one) or when a schema is given."""
    ref_obj = reference if isinstance(reference, dict) else parse_json_object(str(reference))
    if ref_obj is not None or schema is not None:
        out = {"json_valid": json_valid(prediction, schema)}
        if ref_obj:
            out["json_field_accuracy"] = json_field_accuracy(prediction, ref_obj)
        return out
    reference = str(reference)
    return {"exact_match": exact_match(prediction, reference), "token_f1": token_f1(prediction, reference),
            "rouge_l": rouge_l(prediction, reference)}


def task_score(prediction: str, reference: str, fmt: str | None, schema: dict[str, Any] | None = None) -> dict[str, float]:
    """The one headline score of a held-out task answer, the same in 06's quick checks and in 07: token F1 for a
    text answer; for a JSON answer its field accuracy, 0 when it is not valid against the schema (plus
    ``json_valid``)."""
    if fmt == "json":
        valid = json_valid(prediction, schema)
        return {"score": json_field_accuracy(prediction, reference) if valid else 0.0, "json_valid": valid}
    return {"score": token_f1(prediction, reference)}


def score_task(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of each score per task (``task`` field; ``all`` if absent), with ``n``."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: Counter[str] = Counter()
    for rec in records:
        task = str(rec.get("task", "all"))
        counts[task] += 1
        for key, value in score_record(rec["prediction"], rec["reference"], rec.get("schema")).items():
            sums[task][key] += value
    return {task: {**{k: v / counts[task] for k, v in sorted(sums[task].items())}, "n": counts[task]}
            for task in sorted(counts)}
