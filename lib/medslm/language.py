"""Language identification, one place for every step: lingua restricted to a few languages, each detector built
once per process (lingua loads its language models at the first detection, ~0.5–1 s).

Used by 01_annotate (the reply language of a prompt), 05_synthesize's language filter, 07's offline judge and
08's language-mixing detectors.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any


def lingua_language(code: str) -> Any:
    """The lingua ``Language`` of an ISO 639-1 code; a clear error for an unknown code."""
    from lingua import IsoCode639_1, Language

    try:
        return Language.from_iso_code_639_1(IsoCode639_1.from_str(code.lower()))
    except (ValueError, AttributeError):
        known = sorted(lang.iso_code_639_1.name.lower() for lang in Language.all())
        raise ValueError(f"unknown language code {code!r}; lingua knows: {', '.join(known)}") from None


def iso_code(language: Any) -> str:
    """The ISO 639-1 code (``de``) of a lingua ``Language``."""
    return language.iso_code_639_1.name.lower()


def lingua_detector(codes: Iterable[str]) -> Any:
    """lingua's detector restricted to ``codes`` (ISO 639-1), the same object for the same set in any order."""
    return _detector(tuple(sorted({code.lower() for code in codes})))


@functools.lru_cache(maxsize=8)
def _detector(codes: tuple[str, ...]) -> Any:
    from lingua import LanguageDetectorBuilder

    if len(codes) < 2:
        raise ValueError(f"language identification needs at least two languages to tell apart, got {list(codes)}")
    return LanguageDetectorBuilder.from_languages(*(lingua_language(c) for c in codes)).build()


def detect(text: str, codes: Iterable[str] = ("de", "en")) -> str | None:
    """The likeliest of ``codes`` for ``text`` (None when lingua cannot tell)."""
    found = lingua_detector(codes).detect_language_of(text)
    return None if found is None else iso_code(found)
