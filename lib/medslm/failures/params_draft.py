"""Draft of the 08_failure_analysis parameters (the lead moves :class:`FailureParams` into ``medslm.params``).

Defaults are the toy-world smoke values; every threshold of the failure detectors is here, so a profile can change
it and the notebook's parameters cell can be generated from it.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from medslm.params import StrictModel


class FailureParams(StrictModel):
    """08_failure_analysis: language mixing, verbosity, degeneration, format failures and forgetting."""

    # language mixing
    languages: list[str] = Field(["de", "en"], min_length=1, description="ISO 639-1 codes lingua chooses from (the run's language and English at least; every prompt language is added).")
    min_words: int = Field(3, ge=1, le=50, description="Sentences and embedded phrases with fewer words are not judged (lingua is unreliable below).")
    min_confidence: float = Field(0.7, gt=0.5, le=1.0, description="lingua confidence from which a sentence or an embedded phrase counts as another language.")
    detect_phrases: bool = Field(True, description="Also look for phrases of another language inside sentences of the right one (lingua's detect_multiple_languages_of).")
    max_name_share: float = Field(0.5, ge=0.0, le=1.0, description="An embedded phrase with a larger share of capitalised words is taken for a name (Empire State Building) and not counted.")
    min_line_words: int = Field(5, ge=1, le=50, description="LCB line-level: lines with fewer tokens are skipped, and an answer without a judged line is left out (LCB uses 5).")
    # verbosity
    verbose_ratio: float = Field(2.0, gt=1.0, description="An answer is verbose when it has more than this many times the reference's tokens.")
    # degeneration
    repeat_n: int = Field(4, ge=1, le=10, description="n of the repeated n-gram share (seq-rep-n of Welleck et al. 2020: 1 − distinct n-grams / n-grams).")
    repetition_threshold: float = Field(0.3, gt=0.0, le=1.0, description="An answer is repetitive when at least this share of its n-grams repeat an earlier one.")
    max_new_tokens: int | None = Field(None, ge=1, description="Generation limit of 07: an answer with this many tokens counts as cut off (None: only the item's truncated flag).")
    # formats
    strip_code_fences: bool = Field(True, description="Parse JSON inside a ```json … ``` fence (models often add one); off: the whole answer must be JSON.")
    # forgetting and report
    forgetting_reference: str = Field("instruct", min_length=1, description="Variant every other variant's general/chat scores are compared with.")
    forgetting_tolerance: float = Field(0.02, ge=0.0, le=1.0, description="A drop in a general/chat score larger than this (absolute) counts as forgetting.")
    worst_examples: int = Field(3, ge=0, le=100, description="Worst examples shown per failure mode.")

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str]) -> list[str]:
        from medslm.failures.language import lingua_language

        for code in value:
            lingua_language(code)  # raises ValueError naming the code and what is allowed
        return list(dict.fromkeys(code.lower() for code in value))
