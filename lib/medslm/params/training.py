"""Parameters of the training and merging steps: 03_cpt and 04_merge."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medslm.params.base import (
    StrictModel,
)

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class CptParams(StrictModel):
    """03_cpt: continual pre-training of the base model on the filtered corpus (full, LoRA or QLoRA)."""

    mode: Literal["full", "lora", "qlora"] = Field(
        "full", description="full (every weight), lora (adapters on a frozen base) or qlora (adapters on a 4-bit NF4 base)."
    )
    base: str | None = Field(None, description="Model to train (hub id or local folder); None = the base model of 00_prepare.")
    revision: str | None = Field(None, description="Hub revision of `base` (branch, tag or commit); ignored for local folders.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub. Off unless you trust it.")
    # --- data ------------------------------------------------------------------------------------------------
    heldout_fraction: float = Field(0.05, ge=0.0, lt=0.5, description="Share of filtered documents held out for medical perplexity.")
    replay_fraction: float = Field(
        0.3, ge=0.0, lt=1.0,
        description="Share of the training documents replayed from corpus documents the filter rejected (general text against forgetting; 0 = filtered corpus only).",
    )
    max_documents: int | None = Field(
        None, ge=1, description="Train on at most this many filtered documents (a seeded sample, after the held-out split); None = all.",
    )
    block_size: int = Field(128, ge=16, le=32768, description="Packed sequence length in tokens (documents are concatenated, none truncated).")
    eval_max_texts: int = Field(
        400, ge=1, le=100_000,
        description="Texts per perplexity measurement before/after (held-out medical and general text); keep it small on a CPU.",
    )
    # --- LoRA / QLoRA ----------------------------------------------------------------------------------------
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank (lora/qlora).")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha (lora/qlora); the update is scaled by alpha/r.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input (lora/qlora).")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS), min_length=1,
        description="Module names that get LoRA adapters (default: Llama attention + MLP projections); checked against the model.",
    )
    train_embeddings: bool = Field(
        False, description="lora/qlora: also train input embeddings and LM head (full copies) with embedding_learning_rate."
    )
    embedding_learning_rate: float = Field(1e-4, gt=0, lt=1, description="Learning rate of embeddings/LM head when train_embeddings.")
    # --- optimisation ----------------------------------------------------------------------------------------
    learning_rate: float = Field(3e-3, gt=0, lt=1, description="Peak learning rate (AdamW, linear decay after warm-up).")
    warmup: float = Field(0.05, ge=0, description="Warm-up: below 1 a share of the total steps, from 1 on a number of steps.")
    epochs: float = Field(6.0, gt=0, le=100, description="Passes over the training documents.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimisation steps (-1: run the epochs).")
    batch_size: int = Field(16, ge=1, description="Blocks per device per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation: blocks per step = batch_size x grad_accum x processes.")
    weight_decay: float = Field(0.0, ge=0.0, lt=1.0, description="AdamW weight decay.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass (less memory, ~30 % slower).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16 on Ampere+ GPUs, fp16 on older GPUs (T4); or force one."
    )
    save_dtype: Literal["source", "float32", "bfloat16", "float16"] = Field(
        "source", description="Dtype of the saved model: source (the base model's, e.g. bfloat16) or a given one; training runs in float32 on a CPU."
    )
    projection_batches: int = Field(
        2, ge=0, le=100, description="Batches timed (forward + backward, nothing trained) to project the run's wall time before training; 0 = no projection."
    )
    warn_projected_minutes: float = Field(
        30.0, gt=0, description="Warn (naming max_steps, max_documents, block_size) when the projected training time exceeds this many minutes."
    )
    save_steps: int = Field(50, ge=0, description="Write a checkpoint every N steps into 03_cpt/checkpoints (0: none).")
    save_total_limit: int = Field(2, ge=1, description="Keep only the newest N checkpoints.")
    resume: bool = Field(True, description="Continue from the last checkpoint of a run with the same parameters, if any.")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every N steps.")
    # --- pre-instruction tuning (MediPhi) --------------------------------------------------------------------
    pre_instruction_tuning: bool = Field(False, description="First train on question/answer texts, then on the documents.")
    qa_file: str | None = Field(None, description="JSONL with a `text` field of QA pairs for pre-instruction tuning.")
    qa_epochs: float = Field(1.0, gt=0, le=100, description="Passes over the QA texts before the documents.")
    # --- several GPUs ----------------------------------------------------------------------------------------
    num_processes: int = Field(1, ge=1, le=4096, description="Processes (GPUs) for `accelerate launch`; 1 = in the notebook.")
    accelerate_config: str | None = Field(
        None, description="accelerate config for several GPUs: a name in params/accelerate/ (fsdp_2gpu, fsdp_8gpu) or a YAML path."
    )

    @field_validator("train_embeddings")
    @classmethod
    def _embeddings_need_adapters(cls, value: bool, info: Any) -> bool:
        if value and info.data.get("mode") == "full":
            raise ValueError("train_embeddings applies to mode lora/qlora; mode full trains the embeddings already "
                             "(set train_embeddings: false, or mode: lora)")
        return value

    @field_validator("warmup")
    @classmethod
    def _whole_warmup_steps(cls, value: float) -> float:
        if value >= 1 and not float(value).is_integer():
            raise ValueError(f"warmup {value} is at least 1, so it counts steps and must be a whole number "
                             "(or below 1 for a share of the steps)")
        return value

    @field_validator("max_steps")
    @classmethod
    def _no_zero_steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("max_steps 0 would train nothing; use -1 (run the epochs) or a positive number")
        return value

    @field_validator("resume")
    @classmethod
    def _resume_needs_checkpoints(cls, value: bool, info: Any) -> bool:
        if value and info.data.get("save_steps") == 0:
            raise ValueError("resume needs checkpoints but save_steps is 0; set save_steps > 0 or resume: false")
        return value

    @field_validator("qa_file")
    @classmethod
    def _qa_jsonl(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith((".jsonl", ".jsonl.gz")):
            raise ValueError(f"qa_file {value!r} must be a .jsonl file with a `text` field")
        return value

    @field_validator("num_processes")
    @classmethod
    def _qlora_one_process(cls, value: int, info: Any) -> int:
        if value > 1 and info.data.get("mode") == "qlora":
            raise ValueError("qlora runs on one GPU here (a 4-bit base cannot be sharded by this recipe's FSDP "
                             "configs); use mode lora or full with several processes, or num_processes: 1")
        return value

    @field_validator("accelerate_config")
    @classmethod
    def _config_for_several(cls, value: str | None, info: Any) -> str | None:
        if value is not None and info.data.get("num_processes") == 1:
            raise ValueError("accelerate_config is for several processes; set num_processes > 1 or remove it")
        return value


MergeMethod = Literal["slerp", "linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della",
                      "model_stock", "mediphi"]


class MergeParams(StrictModel):
    """04_merge: merge the CPT model back into the instruct model (SLERP sweep and friends, with mergekit)."""

    method: MergeMethod = Field(
        "slerp", description="Merge method; slerp sweeps t, mediphi = each expert SLERPed into the instruct model, then breadcrumbs."
    )
    instruct: str | None = Field(None, description="Instruct model (hub id or local folder); None = the base model of 00_prepare.")
    cpt_model: str | None = Field(None, description="Continually pre-trained model or LoRA adapter folder; None = 03_cpt's model.")
    experts: list[str] = Field(default_factory=list, description="Extra expert models/adapters (folders) merged with the CPT model (ties, breadcrumbs, mediphi, …).")
    # --- SLERP ---------------------------------------------------------------------------------------------------
    t: float = Field(0.5, ge=0.0, le=1.0, description="SLERP/linear interpolation factor: 0 = the instruct model, 1 = the CPT model.")
    t_list: list[float] | None = Field(
        None, description="Per-layer SLERP gradient (values in [0, 1], spread over the layers); overrides t in single merges."
    )
    module_t: dict[str, float | list[float]] = Field(
        default_factory=dict, description="Own t (or gradient) for tensors whose name contains a key, e.g. {self_attn: [0, 0.5, 1], mlp: 0.3}."
    )
    sweep: list[float] = Field(
        default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9],
        description="SLERP t values to merge and evaluate (the two parents, t=0 and t=1, are always evaluated); [] = one merge at t.",
    )
    # --- task-vector methods -----------------------------------------------------------------------------------
    weights: list[float] | None = Field(None, description="Weight per merged model (CPT first, then experts); None = 1 each (linear: equal).")
    density: float = Field(0.9, gt=0.0, le=1.0, description="Share of each task vector kept (ties, dare_ties, breadcrumbs, della).")
    gamma: float = Field(0.01, ge=0.0, lt=1.0, description="breadcrumbs: share of the largest-magnitude differences dropped as outliers.")
    epsilon: float = Field(0.15, ge=0.0, lt=1.0, description="della: spread of the magnitude-based drop probabilities.")
    scale: float = Field(1.0, gt=0.0, le=10.0, description="Factor on the merged task vector (mergekit's lambda).")
    normalize: bool | None = Field(None, description="Divide by the sum of weights; None = mergekit's default for the method.")
    # --- output ---------------------------------------------------------------------------------------------------
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype of the merge arithmetic and output (float32 on CPU).")
    tokenizer_source: Literal["base", "union"] | None = Field(
        None, description="Vocabularies differ: base (keep the instruct tokenizer) or union (all tokens); None = they must match."
    )
    out_shard_size: str | None = Field(
        None, pattern=r"^[0-9]+[KMB]?$", description="Output shard size in bytes (e.g. 500M, 2B); None = chosen from free memory."
    )
    # --- selection ---------------------------------------------------------------------------------------------
    select_metric: str = Field("medical", min_length=1, description="Score the selection maximises (a key of the evaluation).")
    min_general_fraction: float = Field(0.85, ge=0.0, le=1.0, description="Keep general score >= this share of the instruct model's.")
    min_chat_fraction: float = Field(0.7, ge=0.0, le=1.0, description="Keep chat score >= this share of the instruct model's.")
    max_general_ppl_increase: float = Field(
        0.05, ge=0.0, le=1.0, description="Runs without probes: keep general perplexity <= (1 + this) x the instruct model's."
    )
    eval_max_texts: int = Field(64, ge=1, description="Runs without probes: held-out medical and general texts scored per model (each).")
    sanity_prompt: str = Field("What is the capital of France?", min_length=1, description="Prompt of the greedy-generation sanity check of each merge.")

    @field_validator("t_list")
    @classmethod
    def _gradient(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) < 2 or any(not 0.0 <= v <= 1.0 for v in value)):
            raise ValueError(f"t_list {value} must have at least 2 values, each in [0, 1] (a single value: use t)")
        return value

    @field_validator("module_t")
    @classmethod
    def _module_t(cls, value: dict[str, float | list[float]]) -> dict[str, float | list[float]]:
        for key, t in value.items():
            ts = t if isinstance(t, list) else [t]
            if not key or not ts or any(not 0.0 <= v <= 1.0 for v in ts):
                raise ValueError(f"module_t[{key!r}] = {t}: keys are tensor-name parts (self_attn, mlp), values t or lists in [0, 1]")
        return value

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= v <= 1.0 for v in value) or len(set(value)) != len(value):
            raise ValueError(f"sweep {value} must hold distinct t values in [0, 1]")
        return sorted(value)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: list[float] | None, info: Any) -> list[float] | None:
        if value is not None:
            n = 1 + len(info.data.get("experts") or [])
            if len(value) != n:
                raise ValueError(f"weights has {len(value)} values but {n} models are merged (the CPT model + {n - 1} experts)")
        return value

    @field_validator("experts")
    @classmethod
    def _experts(cls, value: list[str], info: Any) -> list[str]:
        if info.data.get("method") == "model_stock" and not value:
            raise ValueError("model_stock needs at least two fine-tuned models: the CPT model and one or more experts")
        if info.data.get("method") == "slerp" and value:
            raise ValueError("slerp merges exactly two models (instruct + CPT); use ties, breadcrumbs or mediphi for experts")
        return value


