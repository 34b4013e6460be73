"""Verbosity: answer length against the reference, and whether the judge of 07 preferred longer answers.

Lengths are whitespace tokens unless a tokenizer is given (an object with ``encode``, e.g. a transformers
tokenizer, or a callable returning a sequence). The judge's length bias is the Spearman correlation of its
preference score (1 model wins, 0.5 tie, 0 loss; ``PairOutcome.score`` of 07) with the length difference
(model − baseline), and the gap between the raw win-rate and 07's length-controlled win-rate (AlpacaEval-style
logistic fit at zero length difference): a positive gap is the part of the win-rate that length bought.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Tokenizer = Callable[[str], Sequence[Any]] | Any


def count_tokens(text: str, tokenizer: Tokenizer | None = None) -> int:
    """Tokens of ``text``: whitespace-separated words, or the tokenizer's tokens (no special tokens)."""
    if tokenizer is None:
        return len(text.split())
    if hasattr(tokenizer, "encode"):
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:  # tokenizers that take no add_special_tokens
            return len(tokenizer.encode(text))
    return len(tokenizer(text))


@dataclass(frozen=True)
class VerbosityCheck:
    """Length of one answer and of its reference; ``ratio`` is None without a (non-empty) reference."""

    tokens: int
    reference_tokens: int | None
    ratio: float | None
    verbose: bool


def check_verbosity(answer: str, reference: str | None, *, verbose_ratio: float = 2.0,
                    tokenizer: Tokenizer | None = None) -> VerbosityCheck:
    """Tokens of the answer, of the reference, their ratio and whether it exceeds ``verbose_ratio``."""
    tokens = count_tokens(answer, tokenizer)
    ref_tokens = count_tokens(reference, tokenizer) if reference is not None else None
    ratio = tokens / ref_tokens if ref_tokens else None
    return VerbosityCheck(tokens, ref_tokens, ratio, ratio is not None and ratio > verbose_ratio)


@dataclass(frozen=True)
class LengthBias:
    """How much the judge's preferences follow length: correlation, and raw vs length-controlled win-rate."""

    n: int
    spearman: float | None  # None when either side is constant (no correlation defined)
    p_value: float | None
    win_rate: float
    lc_win_rate: float | None
    gap: float | None  # win_rate − lc_win_rate


def length_bias(scores: Sequence[float], length_diffs: Sequence[float],
                lc_win_rate: float | None = None) -> LengthBias:
    """Judge length bias from per-pair preference ``scores`` (0, 0.5, 1) and ``length_diffs`` (model − baseline);
    ``lc_win_rate`` is 07's length-controlled win-rate of the same pairs (gap left None without it)."""
    from scipy.stats import spearmanr

    if len(scores) != len(length_diffs):
        raise ValueError(f"scores ({len(scores)}) and length_diffs ({len(length_diffs)}) differ in length")
    if not scores:
        raise ValueError("length_bias needs at least one judged pair")
    bad = [s for s in scores if s not in (0, 0.5, 1)]
    if bad:
        raise ValueError(f"judge scores must be 0, 0.5 or 1 (loss, tie, win); got {bad[:3]}")
    win_rate = sum(scores) / len(scores)
    rho = p_value = None
    if len(set(scores)) > 1 and len(set(length_diffs)) > 1:
        result = spearmanr(scores, length_diffs)
        rho, p_value = float(result.statistic), float(result.pvalue)
    gap = win_rate - lc_win_rate if lc_win_rate is not None else None
    return LengthBias(len(scores), rho, p_value, win_rate, lc_win_rate, gap)
