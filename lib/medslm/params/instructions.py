"""Parameters of the instruction steps: 05_synthesize and 06_align."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medslm.params.base import (
    Language,
    StrictModel,
    server_url,
)
from medslm.params.training import LLAMA_PROJECTIONS

# --------------------------------------------------------------------------------------------------------------
# 05_synthesize
# --------------------------------------------------------------------------------------------------------------

SYNTH_TASKS = ("qa", "extract", "summary", "deid", "specialty", "translate", "simplify")
SYNTH_DOC_TYPES = ("discharge_letter", "referral_letter", "radiology_report", "lab_report", "medication_plan",
                   "nursing_note", "operation_report", "emergency_note", "patient_leaflet", "guideline_excerpt")
SYNTH_REJECTIONS = ("wrong_language", "mixed_language", "verbose", "wrong_fact", "invalid_json")


class SynthesizeParams(StrictModel):
    """05_synthesize: clinical instructions (task x document type x language x format) and preference pairs."""

    # --- the grid --------------------------------------------------------------------------------------------
    tasks: list[str] = Field(default_factory=lambda: list(SYNTH_TASKS), min_length=1,
                             description=f"Tasks of the grid: any of {', '.join(SYNTH_TASKS)}.")
    doc_types: list[str] = Field(default_factory=lambda: list(SYNTH_DOC_TYPES), min_length=1,
                                 description="Clinical document types of the grid (toy world: the ten types of clinical.yaml).")
    languages: list[Language] = Field(default_factory=lambda: ["de", "en"], min_length=1,
                                      description="Languages of the documents and prompts.")
    formats: list[Literal["text", "json"]] = Field(default_factory=lambda: ["text", "json"], min_length=1,
                                                   description="Answer formats: text and/or json (validated against the task's schema).")
    examples_per_cell: int = Field(16, ge=1, le=100_000,
                                   description="Documents per (type, language); each answers its tasks in every format.")
    tasks_per_document: int = Field(0, ge=0, le=100,
                                    description="Tasks each document answers, dealt evenly over the tasks (0 = every task). With more documents, the same number of teacher calls covers more distinct documents.")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of documents held out (all their examples) as the test split.")
    json_prompt: Literal["outline", "schema"] = Field(
        "outline", description="What a JSON prompt shows: the object's outline ({\"drugs\": [\"…\"]}) or the full JSON Schema.")
    schema_files: dict[str, str] = Field(default_factory=dict,
                                         description="Task -> JSON Schema file replacing the built-in schema of that task.")
    # --- the teacher -----------------------------------------------------------------------------------------
    teacher: Literal["programmatic", "openai", "transformers"] = Field(
        "programmatic", description="programmatic (exact answers from the toy world, faults injected), openai (server) or transformers (local model).")
    model: str | None = Field(None, description="openai: the model name the server serves; transformers: hub id or folder.")
    base_url: str | None = Field(None, description="openai: server URL up to /v1, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="openai: NAME of the environment variable holding the API key (never the key itself)."
    )
    concurrency: int = Field(8, ge=1, le=1024, description="openai: requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="openai: seconds to wait for one reply before retrying.")
    max_retries: int = Field(3, ge=0, le=20, description="openai: retries after a timeout, connection error, 429 or 5xx.")
    parse_retries: int = Field(2, ge=0, le=10, description="Times an unparseable JSON reply is asked again before it counts as a failure.")
    max_new_tokens: int = Field(384, ge=1, le=8192, description="Tokens the teacher (and the model for rejected answers) may generate.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature of the teacher (0 = greedy).")
    batch_size: int = Field(8, ge=1, le=4096, description="transformers: prompts per generate() batch.")
    trust_remote_code: bool = Field(False, description="transformers: allow model code from the hub. Off unless you trust it.")
    # --- faults the programmatic teacher injects (share of examples; ground truth recorded) ----------------------
    wrong_language_rate: float = Field(0.05, ge=0.0, le=1.0, description="Answers entirely in the other language.")
    mixed_language_rate: float = Field(0.08, ge=0.0, le=1.0, description="German answers with an English sentence mixed in.")
    verbose_rate: float = Field(0.06, ge=0.0, le=1.0, description="Answers padded with a preamble and needless closing sentences.")
    wrong_fact_rate: float = Field(0.04, ge=0.0, le=1.0, description="Answers with one fact swapped for another of the same relation.")
    invalid_json_rate: float = Field(0.06, ge=0.0, le=1.0, description="JSON answers cut off, single-quoted, with a trailing comma or prose.")
    near_duplicate_rate: float = Field(0.05, ge=0.0, le=1.0, description="Extra copies of examples, exact or with one prompt word changed.")
    # --- filters ---------------------------------------------------------------------------------------------
    filter_json: bool = Field(True, description="Remove JSON answers that do not parse or break the task's schema.")
    filter_language: bool = Field(True, description="Remove answers with words in sentences of another language (lingua).")
    min_sentence_words: int = Field(5, ge=1, le=50, description="Language filter: sentences with fewer words are not judged.")
    min_language_confidence: float = Field(0.7, ge=0.0, le=1.0, description="Language filter: lingua confidence from which a sentence counts as another language.")
    max_foreign_share: float = Field(0.0, ge=0.0, lt=1.0, description="Language filter: largest share of words in another language that is kept.")
    filter_length: bool = Field(True, description="Remove answers outside the task's length bounds (words).")
    length_slack: float = Field(1.0, gt=0.0, le=10.0, description="Multiplies every task's upper length bound.")
    filter_dedup: bool = Field(True, description="Remove exact and near duplicates (MinHash LSH) within each task, format and language.")
    dedup_threshold: float = Field(0.9, gt=0.0, le=1.0, description="Estimated Jaccard similarity (character 5-grams) from which two examples are duplicates.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    judge: Literal["none", "reference", "openai", "transformers"] = Field(
        "reference", description="none, reference (toy world: the knowledge base checks the facts, offline), openai or transformers (an LLM judge)."
    )
    judge_model: str | None = Field(None, description="openai/transformers judge: model name or folder.")
    judge_base_url: str | None = Field(None, description="openai judge: server URL up to /v1.")
    judge_min_score: int = Field(4, ge=1, le=5, description="Lowest judge score (1-5) that is kept.")
    # --- preference pairs --------------------------------------------------------------------------------------
    pair_fraction: float = Field(0.4, ge=0.0, le=1.0, description="Share of kept examples that get a rejected (faulty) variant.")
    rejection_kinds: list[str] = Field(default_factory=lambda: list(SYNTH_REJECTIONS), min_length=1,
                                       description=f"Kinds of rejected answers: any of {', '.join(SYNTH_REJECTIONS)}.")
    model_rejections: int = Field(0, ge=0, description="Also pair this many kept prompts with the current model's own answer (0 = off).")
    rejection_model: str | None = Field(None, description="Model for model_rejections (folder or hub id); None = 04_merge/selected.")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        return _known_items(value, SYNTH_TASKS, "task")

    @field_validator("doc_types")
    @classmethod
    def _known_doc_types(cls, value: list[str]) -> list[str]:
        return _known_items(value, SYNTH_DOC_TYPES, "document type")

    @field_validator("rejection_kinds")
    @classmethod
    def _known_rejections(cls, value: list[str]) -> list[str]:
        return _known_items(value, SYNTH_REJECTIONS, "rejection kind")

    @field_validator("languages", "formats")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value} repeats a value")
        return value

    @field_validator("schema_files")
    @classmethod
    def _schema_tasks(cls, value: dict[str, str]) -> dict[str, str]:
        _known_items(list(value), SYNTH_TASKS, "task in schema_files")
        return value

    @field_validator("model")
    @classmethod
    def _teacher_model(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("teacher") in ("openai", "transformers") and not value:
            raise ValueError(f"teacher {info.data['teacher']} needs model (openai: the name the server serves; "
                             "transformers: a folder or hub id)")
        return value

    @field_validator("base_url")
    @classmethod
    def _teacher_url(cls, value: str | None, info: Any) -> str | None:
        return server_url(value, "teacher openai" if info.data.get("teacher") == "openai" else None)

    @field_validator("judge_base_url")
    @classmethod
    def _judge_url(cls, value: str | None, info: Any) -> str | None:
        server_url(value, "judge openai" if info.data.get("judge") == "openai" else None, "judge_base_url")
        if info.data.get("judge") in ("openai", "transformers") and not info.data.get("judge_model"):
            raise ValueError(f"judge {info.data['judge']} needs judge_model")
        return value


def _known_items(value: list[str], known: tuple[str, ...], what: str) -> list[str]:
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; allowed: {', '.join(known)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{value} repeats a {what}")
    return value




class AlignParams(StrictModel):
    """06_align: SFT then DPO (trl) of the selected merge on 05_synthesize's instructions and preference pairs."""

    start_model: str | None = Field(None, description="Model to align (hub id or folder); None = 04_merge's selected merge.")
    revision: str | None = Field(None, description="Hub revision of `start_model`; ignored for local folders.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub. Off unless you trust it.")
    stages: Literal["sft_dpo", "sft_only", "dpo_only"] = Field(
        "sft_dpo", description="sft_dpo (SFT, then DPO from the SFT model), sft_only, or dpo_only (DPO on the start model)."
    )
    mode: Literal["full", "lora", "qlora"] = Field(
        "full", description="full (every weight), lora (adapters on a frozen base) or qlora (adapters on a 4-bit NF4 base)."
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank (lora/qlora).")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha (lora/qlora).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input (lora/qlora).")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS), min_length=1, description="Module names that get LoRA adapters."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16 on Ampere+ GPUs, fp16 on older GPUs (T4); or force one."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass (less memory, slower).")
    max_length: int = Field(512, ge=16, le=131072, description="Tokens per example (prompt + answer); longer ones are truncated.")
    # --- SFT ---------------------------------------------------------------------------------------------------
    sft_max_examples: int = Field(2400, ge=0, description="SFT: train on at most this many examples (a seeded sample; 0 = all).")
    sft_epochs: float = Field(1.0, gt=0, le=100, description="SFT: passes over the instruction data.")
    sft_learning_rate: float = Field(2e-3, gt=0, lt=1, description="SFT: peak learning rate (AdamW, linear decay).")
    sft_batch_size: int = Field(2, ge=1, description="SFT: examples per device per step (toy world: 2 learns most per second on a CPU, less padding and 4x the steps of 8).")
    assistant_only_loss: bool = Field(
        True, description="SFT: loss on assistant tokens only (needs {% generation %} markers in the chat template)."
    )
    packing: bool = Field(False, description="SFT: pack examples into max_length blocks (bfd, padding-free); best with flash attention on a GPU.")
    # --- DPO ---------------------------------------------------------------------------------------------------
    dpo_max_pairs: int = Field(400, ge=0, description="DPO: train on at most this many pairs (a seeded sample; 0 = all).")
    dpo_epochs: float = Field(1.0, gt=0, le=100, description="DPO: passes over the preference pairs.")
    dpo_learning_rate: float = Field(5e-4, gt=0, lt=1, description="DPO: peak learning rate.")
    dpo_batch_size: int = Field(8, ge=1, description="DPO: pairs per device per step.")
    beta: float = Field(0.1, gt=0, le=10, description="DPO: strength of the KL penalty to the reference model.")
    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid", "sft"], min_length=1, description="DPO loss(es), as trl's DPOConfig.loss_type (a list); sigmoid + sft (RPO) keeps the chosen answers' likelihood up.")
    precompute_ref_log_probs: bool = Field(False, description="DPO: compute the reference log-probs once before training (saves memory on one GPU).")
    # --- both ----------------------------------------------------------------------------------------------------
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    warmup: float = Field(0.05, ge=0, description="Warm-up: below 1 a share of the steps, from 1 on a number of steps.")
    save_steps: int = Field(100, ge=0, description="Checkpoint every N steps (0: none).")
    resume: bool = Field(True, description="Continue from the last checkpoint of a run with the same parameters and data.")
    logging_steps: int = Field(10, ge=1, description="Log the losses every N steps.")
    projection_batches: int = Field(
        2, ge=0, le=100, description="SFT: batches timed (forward + backward, nothing trained) to project the stage's wall time before training; 0 = none."
    )
    warn_projected_minutes: float = Field(
        30.0, gt=0, description="SFT: warn (naming sft_max_examples, sft_epochs, max_length) when the projected time exceeds this many minutes."
    )
    check_examples: int = Field(60, ge=1, le=100_000, description="Held-out examples answered for the quick checks after each stage.")
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Tokens generated per answer in the quick checks (the toy JSON answers take up to ~110).")

    @field_validator("loss_type")
    @classmethod
    def _known_losses(cls, value: list[str]) -> list[str]:
        known = {"sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                 "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"}
        bad = [v for v in value if v not in known]
        if bad:
            raise ValueError(f"loss_type {bad} unknown; trl's DPO losses: {', '.join(sorted(known))}")
        return value


