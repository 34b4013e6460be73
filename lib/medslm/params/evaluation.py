"""Parameters of the evaluation steps: 07_evaluate and 08_failure_analysis."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medslm.params.base import (
    StrictModel,
    server_url,
)


class EvaluateParams(StrictModel):
    """07_evaluate: every model variant on benchmarks, held-out clinical tasks and pairwise judge win-rates."""

    variants: list[Literal["instruct", "cpt", "merge", "sft", "dpo"]] = Field(
        default_factory=lambda: ["instruct", "cpt", "merge", "sft", "dpo"],
        description="The run's models to evaluate (those whose folders exist): instruct, cpt, merge (selected), sft, dpo.",
    )
    comparators: dict[str, str] = Field(
        default_factory=dict, description="Extra models by label, e.g. {qwen7b: Qwen/Qwen2.5-7B-Instruct} (hub id or folder)."
    )
    benchmarks: list[str] = Field(
        default_factory=lambda: ["toy_probes"],
        description="MCQ benchmarks: toy_probes, medqa, medmcqa, pubmedqa, mmlu_medical, mmmlu_de, global_mmlu_de (hub), or a local .jsonl/.csv path.",
    )
    benchmark_limit: int = Field(2000, ge=1, description="Items per benchmark at most (seeded sample).")
    num_fewshot: int = Field(0, ge=0, le=25, description="Solved examples before each question (lm-eval's k-shot; fixed seed).")
    chat_template: bool = Field(False, description="Render MCQ contexts with the model's chat template (lm-eval's apply_chat_template).")
    mcq_batch_size: int = Field(16, ge=1, description="Choices scored per forward pass.")
    generative_limit: int = Field(240, ge=0, description="Held-out 05_synthesize test examples answered by each variant (0 = none).")
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Tokens generated per held-out answer (the toy JSON answers take up to ~110).")
    gen_batch_size: int = Field(16, ge=1, description="Prompts per generate() batch.")
    judge: Literal["none", "reference", "openai", "transformers"] = Field(
        "reference", description="Pairwise judge: reference (toy world, offline: right fact, right language, concise), openai (a server) or transformers (local model)."
    )
    judge_model: str | None = Field(None, description="openai: the served model name; transformers: hub id or folder.")
    judge_base_url: str | None = Field(None, description="openai judge: server URL up to /v1.")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="openai judge: NAME of the environment variable holding the API key."
    )
    comparisons: list[str] = Field(
        default_factory=lambda: ["merge:instruct", "sft:instruct", "dpo:instruct", "dpo:sft"],
        description="Judged pairs model:baseline (labels of variants or comparators); missing models are skipped.",
    )
    bootstrap: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples for the win-rate intervals.")

    @field_validator("comparisons")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v.count(":") != 1 or "" in v.split(":")]
        if bad:
            raise ValueError(f"comparisons {bad} must be written model:baseline, e.g. dpo:instruct")
        return value

    @field_validator("judge_base_url")
    @classmethod
    def _judge_url(cls, value: str | None, info: Any) -> str | None:
        return server_url(value, "judge openai" if info.data.get("judge") == "openai" else None, "judge_base_url")

    @field_validator("judge_model")
    @classmethod
    def _judge_model(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("judge") in ("openai", "transformers") and not value:
            raise ValueError("a judge backend openai/transformers needs judge_model")
        return value


class FailureAnalysisParams(StrictModel):
    """08_failure_analysis: language mixing, verbosity, degeneration, format failures and forgetting, from 07's files."""

    # language mixing
    languages: list[str] = Field(default_factory=lambda: ["de", "en"], min_length=1, description="ISO 639-1 codes lingua chooses from (the run's language and English at least; every prompt language is added).")
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
        from medslm.language import lingua_language

        for code in value:
            lingua_language(code)  # raises ValueError naming the code and what is allowed
        return list(dict.fromkeys(code.lower() for code in value))


# Canonical order of the recipe. A step's notebook is notebooks/<dir>.ipynb; its outputs live in <run>/<dir>/.
