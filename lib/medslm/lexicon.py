"""The offline annotator's scorer: a weighted German/English medical lexicon read from a data file.

The entries live in ``toyworld/data/medical_lexicon.yaml`` beside the knowledge base (notation and weights are
explained at the top of that file); :class:`Lexicon` compiles them into whole-word, prefix, suffix, infix and phrase
tables and scores a text. :func:`default_lexicon` loads the file once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

LEXICON_FILE = Path(__file__).with_name("toyworld") / "data" / "medical_lexicon.yaml"
_TOKEN = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")


class LexiconError(ValueError):
    """The lexicon file is malformed; the message names the file and the entry."""


class Lexicon:
    """A compiled weighted lexicon.

    ``score(text)`` splits the lower-cased text into words (hyphenated compounds kept whole, their parts tried when
    the whole word matches nothing), matches multi-word entries first, then each word against whole-word, prefix,
    suffix and infix entries, the longest entry winning (so ``krankenkasse*`` beats ``kranke*``); each entry
    counts up to 3 times. It returns the weight sum, the weight per 100 words (at least 50 words assumed) and the
    matched entries; ``medical`` is both above their thresholds.
    """

    def __init__(self, lexicon: Mapping[str, Mapping[str, float]], min_score: float = 4.0,
                 min_density: float = 3.0):
        self.min_score, self.min_density = min_score, min_density
        self.terms = {lang: dict(terms) for lang, terms in lexicon.items()}
        self.weights: dict[str, float] = {}
        for terms in lexicon.values():
            for term, w in terms.items():
                self.weights[term.lower()] = float(w)
        self.exact: dict[str, str] = {}
        self.prefix: dict[str, str] = {}
        self.suffix: dict[str, str] = {}
        self.infix: list[tuple[str, str]] = []
        self.phrases: dict[str, list[tuple[tuple[str, ...], bool, str]]] = {}
        for term in self.weights:
            stem = term.strip("*")
            head, tail = term.startswith("*"), term.endswith("*")
            if " " in stem:
                words = tuple(stem.split())
                self.phrases.setdefault(words[0], []).append((words, tail, term))
            elif head and tail:
                self.infix.append((stem, term))
            elif head:
                self.suffix[stem] = term
            elif tail:
                self.prefix[stem] = term
            else:
                self.exact[stem] = term
        for entries in self.phrases.values():
            entries.sort(key=lambda e: -len(e[0]))
        self.prefix_lengths = sorted({len(k) for k in self.prefix}, reverse=True)
        self.suffix_lengths = sorted({len(k) for k in self.suffix}, reverse=True)
        self._cache: dict[str, str | None] = {}

    @property
    def digest(self) -> str:
        """8 hex digits identifying the entries and thresholds (part of the annotator's model name and cache key)."""
        blob = json.dumps({"terms": self.terms, "min_score": self.min_score, "min_density": self.min_density},
                          sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def match_word(self, word: str) -> str | None:
        """The entry matching ``word`` (lower case), the one with the longest stem; None when none does."""
        if word in self._cache:
            return self._cache[word]
        best = self._match(word)
        if best is None and ("-" in word or "'" in word or "’" in word):
            parts = [self._match(p) for p in re.split(r"[-'’]", word) if p]
            found = [p for p in parts if p is not None]
            best = max(found, key=lambda t: len(t.strip("*")), default=None)
        if len(self._cache) < 200_000:
            self._cache[word] = best
        return best

    def _match(self, word: str) -> str | None:
        cands = []
        if word in self.exact:
            cands.append(self.exact[word])
        n = len(word)
        for k in self.prefix_lengths:
            if k <= n and word[:k] in self.prefix:
                cands.append(self.prefix[word[:k]])
                break
        for k in self.suffix_lengths:
            if k <= n and word[n - k:] in self.suffix:
                cands.append(self.suffix[word[n - k:]])
                break
        for stem, term in self.infix:
            if stem in word:
                cands.append(term)
        return max(cands, key=lambda t: len(t.strip("*")), default=None)

    def score(self, text: str) -> dict[str, Any]:
        counts, n = self.matches(text)
        total = sum(self.weights[t] * min(c, 3) for t, c in counts.items())
        density = 100.0 * total / max(n, 50)
        hits = sorted(((t.strip("*"), self.weights[t], c) for t, c in counts.items() if self.weights[t]),
                      key=lambda h: (-h[1] * min(h[2], 3), h[0]))
        return {"score": round(total, 3), "density": round(density, 3), "words": n, "hits": hits,
                "medical": total >= self.min_score and density >= self.min_density}

    def matches(self, text: str) -> tuple[Counter[str], int]:
        """How often each entry (as written, e.g. ``diagnos*``; blockers included) matches in ``text``, and the
        number of words."""
        words = _TOKEN.findall(text.lower())
        counts: Counter[str] = Counter()
        i, n = 0, len(words)
        while i < n:
            w = words[i]
            hit, width = None, 1
            for phrase, tail, term in self.phrases.get(w, ()):
                k = len(phrase)
                if i + k <= n and all(words[i + j] == phrase[j] for j in range(1, k - 1)) and (
                        words[i + k - 1].startswith(phrase[-1]) if tail else words[i + k - 1] == phrase[-1]):
                    hit, width = term, k
                    break
            if hit is None:
                hit = self.match_word(w)
            if hit is not None:
                counts[hit] += 1
            i += width
        return counts, n


def load_lexicon(path: str | Path = LEXICON_FILE) -> Lexicon:
    """A :class:`Lexicon` from a YAML file with ``terms`` (language → entry → weight), ``min_score`` and
    ``min_density``. A malformed file raises :class:`LexiconError` naming the file and the entry."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("terms"), dict):
        raise LexiconError(f"{path}: expected a mapping with 'terms' (language → entry → weight)")
    for lang, terms in data["terms"].items():
        if not isinstance(terms, dict):
            raise LexiconError(f"{path}: terms.{lang} must map entries to weights, got {type(terms).__name__}")
        for term, weight in terms.items():
            if not isinstance(term, str) or not term.strip("* "):
                raise LexiconError(f"{path}: terms.{lang}: entry {term!r} is not a word, phrase or stem")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise LexiconError(f"{path}: terms.{lang}.{term}: weight {weight!r} is not a number")
    thresholds = {}
    for key in ("min_score", "min_density"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LexiconError(f"{path}: {key} must be a number, got {value!r}")
        thresholds[key] = float(value)
    return Lexicon(data["terms"], **thresholds)


@functools.cache
def default_lexicon() -> Lexicon:
    """The packaged lexicon (``toyworld/data/medical_lexicon.yaml``), loaded once."""
    return load_lexicon()


def derive_lexicon(docs: Sequence[Mapping[str, Any]], *, min_docs: int = 5, min_weight: float = 1.0,
                   max_weight: float = 3.0, min_score: float = 4.0, min_density: float = 3.0) -> Lexicon:
    """A lexicon learned from labelled documents (``text``, ``label`` medical/not_medical, optional ``lang``)
    instead of written by hand: one whole-word entry per word found in at least ``min_docs`` documents, weighted
    by the log ratio of the share of medical and of not-medical documents containing it (add-one smoothed),
    clipped to ``±max_weight`` (the hand-written lexicon's scale: 3 = unmistakably medical); words with
    ``|weight| < min_weight`` are left out. Each entry is filed under the language whose documents use it most.
    The decision rule (``min_score``, ``min_density``) defaults to the hand-written lexicon's."""
    df: dict[str, Counter[str]] = {"medical": Counter(), "not_medical": Counter()}
    by_lang: dict[str, Counter[str]] = {}
    n = Counter()
    for doc in docs:
        label = doc["label"]
        if label not in df:
            raise ValueError(f"document {doc.get('id')!r}: label {label!r} is not medical or not_medical")
        words = set(_TOKEN.findall(doc["text"].lower()))
        df[label].update(words)
        by_lang.setdefault(str(doc.get("lang") or "en"), Counter()).update(words)
        n[label] += 1
    if not n["medical"] or not n["not_medical"]:
        raise ValueError(f"need documents of both labels to derive a lexicon, got {dict(n)}")
    terms: dict[str, dict[str, float]] = {lang: {} for lang in sorted(by_lang)}
    for word in sorted(set(df["medical"]) | set(df["not_medical"])):
        med, other = df["medical"][word], df["not_medical"][word]
        if med + other < min_docs:
            continue
        weight = math.log((med + 1) / (n["medical"] + 2)) - math.log((other + 1) / (n["not_medical"] + 2))
        weight = max(-max_weight, min(max_weight, weight))
        if abs(weight) >= min_weight:
            lang = max(sorted(by_lang), key=lambda code: by_lang[code][word])
            terms[lang][word] = round(weight, 2)
    return Lexicon(terms, min_score=min_score, min_density=min_density)


def write_lexicon(lexicon: Lexicon, path: str | Path, header: str = "") -> Path:
    """Write ``lexicon`` as a YAML file :func:`load_lexicon` reads (``header``: comment lines on top)."""
    from medslm.fileio import atomic_path

    path = Path(path)
    body = yaml.safe_dump({"min_score": lexicon.min_score, "min_density": lexicon.min_density,
                           "terms": lexicon.terms}, allow_unicode=True, sort_keys=False)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    with atomic_path(path) as tmp:
        tmp.write_text(comments + body, encoding="utf-8")
    return path
