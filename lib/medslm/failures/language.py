"""Language mixing: which sentences, phrases and lines of an answer are not in the expected language.

Detection (lingua, restricted to a few languages; one detector per language set, built once and cached):

* the answer is split into sentences (pysbd, rule-based, with the expected language's abbreviations);
* a sentence of ``min_words`` words or more is **foreign** when lingua's likeliest language is another one with
  confidence ≥ ``min_confidence``;
* inside the other sentences, ``detect_multiple_languages_of`` finds **phrases** of another language
  (≥ ``min_words`` words and, scored alone, confidence ≥ ``min_confidence``): "Die Nierenfunktion ist stable and
  within normal limits." A phrase whose words are mostly capitalised is taken for a name ("Empire State Building
  in New York") and not counted (share above ``max_name_share``). Per-sentence detection alone misses phrases;
  the multi-language detector alone flags Latin terms such as "Diabetes mellitus Typ" as English. Measured on
  tests/data/clinical_language.yaml (70 foreign sentences or phrases among 268 sentences): per sentence only P 0.98 R 0.84 (R 0.68 on the 40 mixed answers),
  ``detect_multiple_languages_of`` on whole answers P 0.86 R 1.0, both as here P 0.99 R 0.99;
* words in another script than the expected language's (CJK in a German answer) are foreign too.

Language Confusion Benchmark (Marchisio et al. 2024, ``compute_metrics.py`` of for-ai/language-confusion):
a response is skipped when none of its lines has ≥ 5 tokens after removing punctuation; it **passes line-level**
when every such line is in the expected language; among those, it **passes word-level** when no word of another
language is found. LCB uses fastText and an English word list, and reports word-level only for non-Latin-script
languages. Here lingua judges the lines, and word-level means: none of the evidence above (no foreign sentence or
phrase inside a line that passed, no word in another script); single foreign words are not judged.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from medslm.language import lingua_detector, lingua_language

WORD = re.compile(r"[^\W\d_]+(?:[-'’.]?\w+)*")  # a word has at least one letter; numbers are not words
_PUNCTUATION = str.maketrans("", "", string.punctuation + "—")


@dataclass(frozen=True)
class ForeignSpan:
    """Evidence: a part of an answer judged to be in another language."""

    start: int
    end: int
    text: str
    language: str
    confidence: float
    kind: Literal["sentence", "phrase", "script"]


@dataclass
class LanguageCheck:
    """Language mixing in one answer: counts, the two LCB verdicts and the evidence."""

    expected: str
    sentences: int
    foreign_sentences: int
    words: int
    foreign_words: int
    line_pass: bool | None  # None: no line long enough, LCB leaves the answer out
    word_pass: bool | None  # None: the answer did not pass line-level (LCB judges words only then)
    spans: list[ForeignSpan] = field(default_factory=list)

    @property
    def mixed(self) -> bool:
        return bool(self.spans)

    @property
    def foreign_sentence_share(self) -> float:
        return self.foreign_sentences / self.sentences if self.sentences else 0.0

    @property
    def foreign_word_share(self) -> float:
        return self.foreign_words / self.words if self.words else 0.0


class LanguageDetector:
    """lingua restricted to ``languages`` (ISO 639-1 codes); results of repeated texts are cached."""

    def __init__(self, languages: tuple[str, ...]):
        self.languages = languages
        self._lingua = lingua_detector(languages)
        self._top: dict[str, tuple[str, float]] = {}
        self._segments: dict[str, list[tuple[int, int, str, int]]] = {}

    def top(self, text: str) -> tuple[str, float]:
        """The likeliest language of ``text`` and its confidence (0–1, relative to the other languages)."""
        if text not in self._top:
            best = self._lingua.compute_language_confidence_values(text)[0]
            self._top[text] = (best.language.iso_code_639_1.name.lower(), float(best.value))
        return self._top[text]

    def segments(self, text: str) -> list[tuple[int, int, str, int]]:
        """``(start, end, language, words)`` of each single-language part of ``text`` (lingua's segmentation)."""
        if text not in self._segments:
            self._segments[text] = [(r.start_index, r.end_index, r.language.iso_code_639_1.name.lower(), r.word_count)
                                    for r in self._lingua.detect_multiple_languages_of(text)]
        return self._segments[text]


def language_detector(languages: Iterable[str]) -> LanguageDetector:
    """The detector of a language set, built once per process whatever the order of the codes (lingua loads its
    models at the first detection, ~0.5–1 s)."""
    return _cached_detector(tuple(sorted({code.lower() for code in languages})))


@functools.lru_cache(maxsize=8)
def _cached_detector(languages: tuple[str, ...]) -> LanguageDetector:
    return LanguageDetector(languages)


@functools.lru_cache(maxsize=16)
def _segmenter(language: str) -> Any:
    import pysbd

    try:
        return pysbd.Segmenter(language=language, clean=False, char_span=True)
    except ValueError:  # pysbd has no rules for this language: English rules still split at . ! ?
        return pysbd.Segmenter(language="en", clean=False, char_span=True)


def split_sentences(text: str, language: str) -> list[tuple[int, int, str]]:
    """``(start, end, sentence)`` of each sentence of ``text`` (pysbd; line breaks always end a sentence)."""
    out = []
    for match in re.finditer(r"[^\n]+", text):
        for span in _segmenter(language).segment(match.group()):
            if span.sent.strip():
                out.append((match.start() + span.start, match.start() + span.end, span.sent))
    return out


def _script(char: str) -> str:
    """First word of the character's Unicode name: LATIN, CYRILLIC, CJK, ARABIC, HIRAGANA …"""
    return unicodedata.name(char, "UNKNOWN").split()[0]


@functools.lru_cache(maxsize=64)
def expected_script(language: str) -> str | None:
    """LATIN/CYRILLIC/ARABIC/DEVANAGARI for languages lingua lists under that script; None for the others."""
    from lingua import Language

    lang = lingua_language(language)
    for script, members in (("LATIN", Language.all_with_latin_script()),
                            ("CYRILLIC", Language.all_with_cyrillic_script()),
                            ("ARABIC", Language.all_with_arabic_script()),
                            ("DEVANAGARI", Language.all_with_devanagari_script())):
        if lang in members:
            return script
    return None


def _other_script_words(text: str, script: str | None) -> list[ForeignSpan]:
    if script is None:
        return []
    out = []
    for match in re.finditer(r"\w+", text):
        scripts = {_script(c) for c in match.group() if c.isalpha()}
        if scripts and script not in scripts:
            out.append(ForeignSpan(match.start(), match.end(), match.group(), "/".join(sorted(scripts)).lower(),
                                   1.0, "script"))
    return out


def _phrases(detector: LanguageDetector, sentence: str, offset: int, expected: str,
             min_words: int, min_confidence: float, max_name_share: float) -> list[ForeignSpan]:
    """Phrases of another language inside a sentence judged to be in the expected language."""
    out = []
    for start, end, language, words in detector.segments(sentence):
        if language == expected or words < min_words:
            continue
        piece = sentence[start:end]
        piece_words = WORD.findall(piece)
        if not piece_words or sum(w[0].isupper() for w in piece_words) / len(piece_words) > max_name_share:
            continue  # mostly capitalised: a name, not a phrase of another language
        top, confidence = detector.top(piece)
        if top == language and confidence >= min_confidence:
            out.append(ForeignSpan(offset + start, offset + end, piece.strip(), language, confidence, "phrase"))
    return out


def _count_words(text: str, spans: list[ForeignSpan]) -> tuple[int, int]:
    """Words in ``text`` and words that lie (by their first character) in one of ``spans``."""
    starts = [m.start() for m in WORD.finditer(text)]
    foreign = sum(any(s.start <= pos < s.end for s in spans) for pos in starts)
    return len(starts), foreign


def _line_level(detector: LanguageDetector, text: str, expected: str, min_words: int,
                min_confidence: float) -> bool | None:
    """LCB line-level verdict: punctuation removed, lines under ``min_words`` tokens skipped."""
    lines = [line for line in (raw.translate(_PUNCTUATION) for raw in text.split("\n"))
             if len(line.split()) >= min_words]
    if not lines:
        return None
    for line in lines:
        top, confidence = detector.top(line)
        if top != expected and confidence >= min_confidence:
            return False
    return True


def check_language(answer: str, expected: str, detector: LanguageDetector, *, min_words: int = 3,
                   min_confidence: float = 0.7, detect_phrases: bool = True, max_name_share: float = 0.5,
                   min_line_words: int = 5) -> LanguageCheck:
    """Language mixing of one answer whose expected language is ``expected`` (a code the detector knows)."""
    if expected not in detector.languages:
        raise ValueError(f"expected language {expected!r} is not among the detector's {list(detector.languages)}")
    spans: list[ForeignSpan] = []
    judged = foreign = 0
    for start, _end, sentence in split_sentences(answer, expected):
        if len(WORD.findall(sentence)) < min_words:
            continue
        judged += 1
        top, confidence = detector.top(sentence)
        if top != expected and confidence >= min_confidence:
            spans.append(ForeignSpan(start, start + len(sentence), sentence.strip(), top, confidence, "sentence"))
            foreign += 1
        elif detect_phrases:
            found = _phrases(detector, sentence, start, expected, min_words, min_confidence, max_name_share)
            spans += found
            foreign += bool(found)
    script_spans = _other_script_words(answer, expected_script(expected))
    spans += [s for s in script_spans if not any(o.start <= s.start < o.end for o in spans)]
    words, foreign_words = _count_words(answer, spans)
    line_pass = _line_level(detector, answer, expected, min_line_words, min_confidence)
    word_pass = (not spans) if line_pass else None  # LCB: any word of another language fails the answer
    return LanguageCheck(expected, judged, foreign, words, foreign_words, line_pass, word_pass,
                         sorted(spans, key=lambda s: s.start))
