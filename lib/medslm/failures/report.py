"""One pass over 07's per-item answers: every detector per item, a variants × failure-rates table, worst examples.

Language and verbosity are judged on text answers, formats on JSON answers, degeneration on both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medslm.failures.degeneration import DegenerationCheck, check_degeneration
from medslm.failures.formats import FormatCheck, check_format
from medslm.failures.language import LanguageCheck, check_language, language_detector
from medslm.failures.verbosity import Tokenizer, VerbosityCheck, check_verbosity, count_tokens
from medslm.params import FailureAnalysisParams

FORMATS = ("text", "json")
MODES = ("language", "verbosity", "repetition", "truncated", "empty", "invalid_json", "schema")


@dataclass
class FailureItem:
    """One generated answer of 07 with what the detectors need."""

    variant: str
    task: str
    prompt_language: str
    prompt: str
    answer: str
    reference: str | dict[str, Any] | None = None
    format: Literal["text", "json"] = "text"
    schema: dict[str, Any] | None = None
    truncated: bool = False
    id: str = ""

    @classmethod
    def from_record(cls, rec: dict[str, Any], where: str = "record") -> FailureItem:
        """Build from a JSON record; errors name ``where`` (e.g. ``file:line``), the field and what is allowed."""
        for name in ("variant", "task", "prompt_language", "prompt", "answer"):
            if not isinstance(rec.get(name), str):
                raise ValueError(f"{where}: field {name!r} must be a string, got {rec.get(name)!r}")
        fmt = rec.get("format", "text")
        if fmt not in FORMATS:
            raise ValueError(f"{where}: field 'format' is {fmt!r}; allowed: {', '.join(FORMATS)}")
        if rec.get("schema") is not None and not isinstance(rec["schema"], dict):
            raise ValueError(f"{where}: field 'schema' must be a JSON object (a JSON Schema) or null")
        return cls(rec["variant"], rec["task"], rec["prompt_language"].lower(), rec["prompt"], rec["answer"],
                   rec.get("reference"), fmt, rec.get("schema"), bool(rec.get("truncated", False)),
                   str(rec.get("id", "")))


def read_items(path: str | Path) -> list[FailureItem]:
    """Items of a JSON Lines file (07's per-item answers); a bad record names ``file:line``."""
    from medslm.rundir import iter_jsonl_numbered

    return [FailureItem.from_record(rec, f"{path}:{line}") for line, rec in iter_jsonl_numbered(path)]


@dataclass
class ItemResult:
    """What every applicable detector found in one item."""

    item: FailureItem
    tokens: int
    degeneration: DegenerationCheck
    language: LanguageCheck | None = None
    verbosity: VerbosityCheck | None = None
    format: FormatCheck | None = None

    def record(self) -> dict[str, Any]:
        """Flat per-item values (booleans as 0/1, None where a detector does not apply) for tables."""
        it, lang, verb, fmt, deg = self.item, self.language, self.verbosity, self.format, self.degeneration
        return {
            "variant": it.variant, "task": it.task, "prompt_language": it.prompt_language, "tokens": self.tokens,
            "language_mixed": _num(lang and lang.mixed), "foreign_sentence_share": _num(lang and lang.foreign_sentence_share),
            "foreign_word_share": _num(lang and lang.foreign_word_share),
            "lcb_line_pass": _num(lang and lang.line_pass), "lcb_word_pass": _num(lang and lang.word_pass),
            "length_ratio": _num(verb and verb.ratio), "verbose": _num(verb.verbose if verb and verb.ratio is not None else None),
            "distinct_1": deg.distinct_1, "distinct_2": deg.distinct_2, "repeated_share": deg.repeated_share,
            "repetitive": float(deg.repetitive), "truncated": float(deg.truncated), "empty": float(deg.empty),
            "invalid_json": _num(fmt and not fmt.valid_json), "schema_violation": _num(fmt and fmt.schema_violation),
            "missing_fields": _num(fmt and bool(fmt.missing_fields)),
        }


def _num(value: Any) -> float | None:
    """``None`` stays None (the detector did not apply); booleans and numbers become floats."""
    return None if value is None else float(value)


@dataclass(frozen=True)
class Example:
    """A worst example of a failure mode: what was asked, answered and expected, and the detector's evidence."""

    mode: str
    variant: str
    task: str
    prompt_language: str
    prompt: str
    answer: str
    reference: str | None
    evidence: str
    severity: float


@dataclass
class FailureReport:
    """Per-item results of :func:`analyse_failures` and the tables and examples built from them."""

    results: list[ItemResult]
    params: FailureAnalysisParams
    languages: tuple[str, ...] = field(default=())

    def frame(self) -> Any:
        """One row per item (pandas DataFrame) with :meth:`ItemResult.record`'s columns."""
        import pandas as pd

        frame = pd.DataFrame([r.record() for r in self.results])
        values = [c for c in frame.columns if c not in ("variant", "task", "prompt_language")]
        return frame.astype(dict.fromkeys(values, float))  # None (detector did not apply) → NaN, never object

    def table(self, by: Sequence[str] = ("variant",)) -> Any:
        """Failure rates and means per group (default per variant): ``answers`` plus every record column."""
        frame = self.frame()
        table = frame.groupby(list(by), sort=True).mean(numeric_only=True)
        table.insert(0, "answers", frame.groupby(list(by), sort=True).size())
        return table

    def worst(self, mode: str, k: int | None = None) -> list[Example]:
        """The ``k`` (default ``params.worst_examples``) most severe failing items of ``mode`` (one of MODES)."""
        if mode not in MODES:
            raise ValueError(f"unknown failure mode {mode!r}; known: {', '.join(MODES)}")
        found = [ex for ex in (_example(mode, r) for r in self.results) if ex is not None]
        found.sort(key=lambda ex: ex.severity, reverse=True)
        return found[: self.params.worst_examples if k is None else k]


def _example(mode: str, result: ItemResult) -> Example | None:
    """The example of ``result`` for ``mode``, or None when the item does not fail that way."""
    lang, verb, fmt, deg = result.language, result.verbosity, result.format, result.degeneration
    if mode == "language" and lang is not None and lang.mixed:
        spans = "; ".join(f"{s.kind} in {s.language} ({s.confidence:.2f}): {s.text!r}" for s in lang.spans)
        found = (lang.foreign_word_share, spans)
    elif mode == "verbosity" and verb is not None and verb.verbose:
        found = (verb.ratio, f"{verb.tokens} tokens vs {verb.reference_tokens} in the reference (×{verb.ratio:.1f})")
    elif mode == "repetition" and deg.repetitive:
        text, count = deg.top_repeat or ("", 0)
        found = (deg.repeated_share, f"{deg.repeated_share:.0%} of n-grams repeat; {text!r} ×{count}")
    elif mode == "truncated" and deg.truncated:
        found = (float(result.tokens), f"cut off at {result.tokens} tokens")
    elif mode == "empty" and deg.empty:
        found = (1.0, "empty answer")
    elif mode == "invalid_json" and fmt is not None and not fmt.valid_json:
        found = (1.0, f"not JSON: {fmt.error}")
    elif mode == "schema" and fmt is not None and fmt.schema_violation:
        found = (float(len(fmt.schema_errors)), "; ".join(fmt.schema_errors))
    else:
        return None
    it = result.item
    reference = json.dumps(it.reference, ensure_ascii=False) if isinstance(it.reference, dict) else it.reference
    return Example(mode, it.variant, it.task, it.prompt_language, it.prompt, it.answer, reference, found[1],
                   float(found[0]))


def analyse_failures(items: Iterable[FailureItem], params: FailureAnalysisParams | None = None,
                     tokenizer: Tokenizer | None = None, progress: bool = False) -> FailureReport:
    """Run every applicable detector on each item. One lingua detector serves all items: its languages are
    ``params.languages`` plus every prompt language. ``tokenizer`` counts tokens (default: whitespace words)."""
    from tqdm.auto import tqdm

    params = params or FailureAnalysisParams()
    items = list(items)
    from medslm.language import lingua_language

    for it in items:
        try:
            lingua_language(it.prompt_language)
        except ValueError as e:
            raise ValueError(f"item {it.id or '?'} ({it.variant}/{it.task}): prompt_language: {e}") from None
    languages = tuple(sorted(set(params.languages) | {"en"} | {it.prompt_language for it in items}))
    detector = language_detector(languages)
    results = []
    for it in tqdm(items, desc="failure analysis", disable=not progress):
        tokens = count_tokens(it.answer, tokenizer)
        result = ItemResult(it, tokens, check_degeneration(
            it.answer, repeat_n=params.repeat_n, repetition_threshold=params.repetition_threshold,
            truncated=it.truncated, tokens=tokens, max_new_tokens=params.max_new_tokens))
        if it.format == "json":
            result.format = check_format(it.answer, it.schema, strip_code_fences=params.strip_code_fences)
        else:
            result.language = check_language(
                it.answer, it.prompt_language, detector, min_words=params.min_words,
                min_confidence=params.min_confidence, detect_phrases=params.detect_phrases,
                max_name_share=params.max_name_share,
                min_line_words=params.min_line_words)
            reference = it.reference if isinstance(it.reference, str) else None
            result.verbosity = check_verbosity(it.answer, reference, verbose_ratio=params.verbose_ratio,
                                               tokenizer=tokenizer)
        results.append(result)
    return FailureReport(results, params, languages)
