"""Degeneration: low lexical diversity, repetition loops, answers cut off at the token limit, empty answers.

* distinct-n (Li et al. 2016): distinct n-grams / n-grams of one answer (1.0 for an answer shorter than n);
* repeated n-gram share = seq-rep-n (Welleck et al. 2020): 1 − distinct-n, the share of n-grams that repeat an
  earlier one in the same answer; an answer is *repetitive* from ``repetition_threshold`` on;
* cut off: the item's ``truncated`` flag from generation, or ``tokens ≥ max_new_tokens`` when a limit is given.

Tokens are whitespace words, lower-cased, punctuation kept (a loop "und und und" is three equal tokens).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of ``tokens`` in order."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: Sequence[str], n: int) -> float:
    """Distinct n-grams / n-grams; 1.0 when there is no n-gram."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_ngram_share(tokens: Sequence[str], n: int) -> float:
    """Share of n-grams that repeat an earlier one (seq-rep-n); 0.0 when there is no n-gram."""
    return 1.0 - distinct_n(tokens, n)


@dataclass(frozen=True)
class DegenerationCheck:
    """Degeneration of one answer; ``top_repeat`` is the most repeated n-gram and its count (evidence)."""

    distinct_1: float
    distinct_2: float
    repeated_share: float
    repetitive: bool
    truncated: bool
    empty: bool
    top_repeat: tuple[str, int] | None


def check_degeneration(answer: str, *, repeat_n: int = 4, repetition_threshold: float = 0.3,
                       truncated: bool = False, tokens: int | None = None,
                       max_new_tokens: int | None = None) -> DegenerationCheck:
    """Degeneration of one answer. ``tokens`` is its length in the generator's tokens when known (compared with
    ``max_new_tokens``); ``truncated`` is the generator's own flag."""
    words = answer.lower().split()
    share = repeated_ngram_share(words, repeat_n)
    counts = Counter(ngrams(words, repeat_n))
    top = counts.most_common(1)
    top_repeat = (" ".join(top[0][0]), top[0][1]) if top and top[0][1] > 1 else None
    length = tokens if tokens is not None else len(words)
    cut = bool(truncated) or (max_new_tokens is not None and length >= max_new_tokens)
    return DegenerationCheck(distinct_n(words, 1), distinct_n(words, 2), share, share >= repetition_threshold,
                             cut, not answer.strip(), top_repeat)
