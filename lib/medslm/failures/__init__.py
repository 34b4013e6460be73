"""Failure analysis (08): language mixing, verbosity, degeneration, format failures and forgetting.

Everything is computed from 07's per-item answers and scores; no model is loaded.
"""

from medslm.failures.degeneration import (
    DegenerationCheck,
    check_degeneration,
    distinct_n,
    repeated_ngram_share,
)
from medslm.failures.forgetting import ForgettingRow, forgetting_table, restored_share
from medslm.failures.formats import FormatCheck, check_format, parse_json_answer
from medslm.failures.language import (
    ForeignSpan,
    LanguageCheck,
    LanguageDetector,
    check_language,
    language_detector,
    split_sentences,
)
from medslm.failures.report import (
    MODES,
    Example,
    FailureItem,
    FailureReport,
    ItemResult,
    analyse_failures,
    read_items,
)
from medslm.failures.verbosity import LengthBias, VerbosityCheck, check_verbosity, count_tokens, length_bias
from medslm.params import FailureAnalysisParams

__all__ = [
    "MODES", "DegenerationCheck", "Example", "FailureItem", "FailureAnalysisParams", "FailureReport", "ForeignSpan",
    "FormatCheck", "ForgettingRow", "ItemResult", "LanguageCheck", "LanguageDetector", "LengthBias",
    "VerbosityCheck", "analyse_failures", "check_degeneration", "check_format", "check_language",
    "check_verbosity", "count_tokens", "distinct_n", "forgetting_table", "language_detector",
    "parse_json_answer", "read_items", "repeated_ngram_share", "restored_share", "split_sentences", "length_bias",
]
