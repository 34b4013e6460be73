"""Parameter models of a run and of each step, and validation of whole profiles.

A profile is a YAML file with a ``run`` section (:class:`RunParams`) and a ``steps`` section mapping step names to
that step's parameters. Every field has a type, a default (the smoke value), constraints and a description, so
``load_profile`` can report *every* problem at once with file, step, field, bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# --------------------------------------------------------------------------------------------------------------
# YAML: PyYAML follows YAML 1.1 and reads `1e-4` (no dot) as a *string*. This loader reads it as a float.
# --------------------------------------------------------------------------------------------------------------


class _ProfileLoader(yaml.SafeLoader):
    """SafeLoader that resolves scientific notation such as ``1e-4`` and ``5E+3`` as floats."""


_ProfileLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A YAML mapping whose keys are unique: a repeated key would otherwise win silently."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (lines {seen[key]} and {key_node.start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_ProfileLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with :class:`_ProfileLoader`; a syntax error, a repeated key or bytes that are not UTF-8
    name the file and line."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.load(f, Loader=_ProfileLoader)  # noqa: S506 - SafeLoader subclass
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ProfileError([f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                            "save the profile as UTF-8"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ProfileError([f"{where}: not valid YAML: {getattr(e, 'problem', e)}"]) from None


# --------------------------------------------------------------------------------------------------------------
# Secrets: recognised, never echoed
# --------------------------------------------------------------------------------------------------------------

_SECRET = re.compile(
    r"(?:^|[\s=:\"'/?&])(?:sk-|sk_|hf_|ghp_|gho_|github_pat_|xox[abpr]-|AKIA|glpat-)[A-Za-z0-9_\-]{8,}"  # known key prefixes
    r"|Bearer\s+\S{8,}"                                                                      # an Authorization value
    r"|^(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])(?![0-9a-f]+$)[A-Za-z0-9_\-]{32,}$"  # a long opaque token
)


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` looks like an API key or token (hex commit hashes and hub ids do not)."""
    return bool(_SECRET.search(text.strip()))


def mask_secret(text: str) -> str:
    """A stand-in that says what was hidden without showing any of it."""
    return f"<{len(text)} characters, not shown: it may be a secret>"


def scrub_secrets(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with the given ``secrets`` and anything that looks like a key or ``Bearer …`` value masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"Bearer\s+\S+", "Bearer ***", text)
    return re.sub(r"(?:sk-|sk_|hf_|ghp_|gho_|github_pat_|xox[abpr]-|glpat-)[A-Za-z0-9_\-]{8,}", "***", text)


# --------------------------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------------------------


class StrictModel(BaseModel):
    """Base for parameter models: unknown fields are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_from_yaml_strings(cls, value: Any, info: Any) -> Any:
        """Accept numeric strings such as '1e-4' (a YAML 1.1 trap) for numeric fields; refuse true/false there (it
        would become 1/0) and any value that looks like a secret (pydantic checks the rest)."""
        field = cls.model_fields.get(info.field_name)
        if isinstance(value, bool) and field is not None and field.annotation in (float, int, float | None, int | None):
            raise ValueError(f"{value} is not a number")
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and looks_like_secret(text):
                raise ValueError(f"{mask_secret(text)} looks like a secret (an API key or token): never write one in "
                                 "a profile; put it in an environment variable and name the variable (api_key_env)")
        if isinstance(value, str) and field is not None and field.annotation in (float, int, float | None):
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if field.annotation is int and number.is_integer() else number
        return value

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]):
        """Build the model from the variables of a notebook's parameters cell (``globals()``)."""
        return cls(**{name: namespace[name] for name in cls.model_fields if name in namespace})

    def params_hash(self) -> str:
        """A stable hash of the values, used to decide whether a step must run again."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


Device = Literal["auto", "cpu", "cuda"]
Language = Literal["de", "en"]


class RunParams(StrictModel):
    """What every step of a run shares."""

    name: str = Field("smoke", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name (letters, digits, _ . -).")
    output_dir: str = Field("outputs/smoke", min_length=1, description="Run directory, relative to the repository root or absolute.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for every random choice of the run (0 … 2**32 - 1).")
    language: Language = Field("de", description="Language of the target clinical model: de or en.")
    device: Device = Field("auto", description="auto (cuda if available, else cpu), cpu or cuda.")


# --------------------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------------------


class PrepareParams(StrictModel):
    """00_prepare: build the toy world and its tiny general model, or resolve a real corpus and base model."""

    source: Literal["toyworld", "hub", "local"] = Field(
        "toyworld", description="toyworld (embedded offline world), hub (a hub dataset, streamed) or local (JSONL/Parquet files)."
    )
    # --- toy world -----------------------------------------------------------------------------------------
    n_documents: int = Field(3000, gt=0, le=5_000_000, description="Web-corpus documents to generate (toy world).")
    de_fraction: float = Field(0.5, ge=0.0, le=1.0, description="Share of German documents in the toy corpus.")
    medical_fraction: float = Field(0.35, ge=0.0, le=1.0, description="Share of medical documents in the toy corpus.")
    ambiguous_fraction: float = Field(0.15, ge=0.0, le=1.0, description="Share of ambiguous (fitness, nutrition, wellness…) documents.")
    pretrain_documents: int = Field(2500, gt=0, description="General documents the tiny model is pretrained on.")
    chat_examples: int = Field(2500, ge=0, description="General chat examples mixed into pretraining.")
    vocab_size: int = Field(2048, ge=300, le=65536, description="BPE vocabulary size of the toy tokenizer.")
    hidden_size: int = Field(128, ge=16, description="Hidden size of the tiny Llama.")
    num_layers: int = Field(2, ge=1, description="Transformer layers of the tiny Llama.")
    num_heads: int = Field(4, ge=1, description="Attention heads of the tiny Llama.")
    intermediate_size: int = Field(384, ge=16, description="MLP width of the tiny Llama.")
    block_size: int = Field(128, ge=16, le=4096, description="Packed sequence length for pretraining.")
    pretrain_epochs: float = Field(4.0, gt=0, description="Passes over the pretraining data.")
    learning_rate: float = Field(4e-3, gt=0, lt=1, description="Peak learning rate of pretraining.")
    batch_size: int = Field(32, ge=1, description="Sequences per optimisation step.")
    eval_max_texts: int = Field(400, ge=1, le=100_000, description="Held-out texts per domain for the perplexity of the toy model.")
    # --- real corpora ------------------------------------------------------------------------------------------
    hub_dataset: str | None = Field(None, description="Hub dataset id for source=hub, e.g. HuggingFaceFW/fineweb-2.")
    hub_config: str | None = Field(None, description="Hub dataset config, e.g. deu_Latn.")
    hub_split: str = Field("train", description="Hub dataset split.")
    local_files: list[str] = Field(default_factory=list, description="JSONL or Parquet files for source=local.")
    text_field: str = Field("text", min_length=1, description="Field holding the document text.")
    max_documents: int = Field(100_000, gt=0, description="Documents taken from a hub or local corpus.")
    base_model: str | None = Field(
        None, description="Instruct model to adapt (hub id or local folder); the toy world uses its tiny model."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the base model.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub. Off unless you trust it.")

    @field_validator("ambiguous_fraction")
    @classmethod
    def _fractions_fit(cls, value: float, info: Any) -> float:
        medical = info.data.get("medical_fraction")
        if medical is not None and medical + value > 1:
            raise ValueError(f"medical_fraction {medical} + ambiguous_fraction {value} = {medical + value:g} is more "
                             "than 1: the rest of the corpus is general, so together they may be at most 1")
        return value

    @field_validator("local_files")
    @classmethod
    def _known_suffixes(cls, files: list[str]) -> list[str]:
        for f in files:
            if not f.endswith((".jsonl", ".json", ".parquet", ".jsonl.gz")):
                raise ValueError(f"{f!r} is not a .jsonl, .jsonl.gz, .json or .parquet file")
        return files


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
    sft_max_examples: int = Field(1200, ge=0, description="SFT: train on at most this many examples (a seeded sample; 0 = all).")
    sft_epochs: float = Field(1.0, gt=0, le=100, description="SFT: passes over the instruction data.")
    sft_learning_rate: float = Field(2e-3, gt=0, lt=1, description="SFT: peak learning rate (AdamW, linear decay).")
    sft_batch_size: int = Field(32, ge=1, description="SFT: examples per device per step.")
    assistant_only_loss: bool = Field(
        True, description="SFT: loss on assistant tokens only (needs {% generation %} markers in the chat template)."
    )
    packing: bool = Field(False, description="SFT: pack examples into max_length blocks (bfd, padding-free); best with flash attention on a GPU.")
    # --- DPO ---------------------------------------------------------------------------------------------------
    dpo_max_pairs: int = Field(400, ge=0, description="DPO: train on at most this many pairs (a seeded sample; 0 = all).")
    dpo_epochs: float = Field(1.0, gt=0, le=100, description="DPO: passes over the preference pairs.")
    dpo_learning_rate: float = Field(5e-4, gt=0, lt=1, description="DPO: peak learning rate.")
    dpo_batch_size: int = Field(16, ge=1, description="DPO: pairs per device per step.")
    beta: float = Field(0.1, gt=0, le=10, description="DPO: strength of the KL penalty to the reference model.")
    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid"], min_length=1, description="DPO loss(es), as trl's DPOConfig.loss_type (a list).")
    precompute_ref_log_probs: bool = Field(False, description="DPO: compute the reference log-probs once before training (saves memory on one GPU).")
    # --- both ----------------------------------------------------------------------------------------------------
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    warmup: float = Field(0.05, ge=0, description="Warm-up: below 1 a share of the steps, from 1 on a number of steps.")
    save_steps: int = Field(100, ge=0, description="Checkpoint every N steps (0: none).")
    resume: bool = Field(True, description="Continue from the last checkpoint of a run with the same parameters and data.")
    logging_steps: int = Field(10, ge=1, description="Log the losses every N steps.")
    check_examples: int = Field(120, ge=1, le=100_000, description="Held-out examples answered for the quick checks after each stage.")
    max_new_tokens: int = Field(64, ge=1, le=8192, description="Tokens generated per answer in the quick checks.")

    @field_validator("loss_type")
    @classmethod
    def _known_losses(cls, value: list[str]) -> list[str]:
        known = {"sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                 "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"}
        bad = [v for v in value if v not in known]
        if bad:
            raise ValueError(f"loss_type {bad} unknown; trl's DPO losses: {', '.join(sorted(known))}")
        return value


class AnnotateParams(StrictModel):
    """01_annotate: an LLM (or the offline lexicon) labels a sample of the corpus as medical or not."""

    backend: Literal["lexicon", "transformers", "loglik", "openai"] = Field(
        "lexicon", description="lexicon (offline weighted medical lexicon), transformers (local model writes a reply), loglik (local model: the verdict as a choice scored by log-likelihood, never unparseable) or openai (OpenAI-compatible server)."
    )
    model: str | None = Field(
        None, description="transformers/loglik: hub id or folder (None = the model of 00_prepare); openai: the model name the server serves."
    )
    base_url: str | None = Field(None, description="openai: server URL up to /v1, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="openai: NAME of the environment variable holding the API key (never the key itself)."
    )
    prompt_language: Language | None = Field(None, description="Language of the prompt: de or en (None = the run language).")
    sample_size: int = Field(1200, gt=0, le=10_000_000, description="Documents drawn from the corpus (seeded) and labelled.")
    stratify_by_language: bool = Field(True, description="Give each language its corpus share of the sample.")
    max_chars: int = Field(2000, ge=100, le=200_000, description="Characters of a document shown to the annotator (truncated at a word boundary).")
    quality_score: bool = Field(True, description="Also ask for a 0-5 quality score of the document as medical training text.")
    batch_size: int = Field(8, ge=1, le=4096, description="transformers/loglik: prompts per batch.")
    concurrency: int = Field(4, ge=1, le=1024, description="openai: requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="openai: seconds to wait for one reply before retrying.")
    max_retries: int = Field(3, ge=0, le=20, description="openai: retries (exponential backoff) after a timeout, connection error, 429 or 5xx.")
    max_new_tokens: int = Field(256, ge=1, le=8192, description="Tokens the annotator may generate (justification + score + verdict).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    gold_file: str | None = Field(None, description="Optional human labels: JSONL with id and label (medical | not_medical).")
    trust_remote_code: bool = Field(False, description="transformers: allow model code from the hub. Off unless you trust it.")
    max_unparseable_rate: float = Field(
        0.2, ge=0.0, le=1.0, description="Fail the step when a larger share of the replies has no valid verdict line."
    )

    @field_validator("model")
    @classmethod
    def _openai_model(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("backend") == "openai" and not value:
            raise ValueError("the openai backend needs model: the name the server serves (transformers serve: its model path)")
        return value

    @field_validator("base_url")
    @classmethod
    def _openai_url(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("backend") == "openai" and not value:
            raise ValueError("the openai backend needs base_url, e.g. http://127.0.0.1:8000/v1")
        if value is not None and not re.match(r"^https?://", value):
            raise ValueError(f"base_url {value!r} must start with http:// or https://")
        return value

    @field_validator("gold_file")
    @classmethod
    def _gold_jsonl(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".jsonl"):
            raise ValueError(f"gold_file {value!r} must be a .jsonl file with id and label fields")
        return value


class ClassifyParams(StrictModel):
    """02_classify: a classifier trained on the annotated sample filters the whole corpus at a target precision."""

    backend: Literal["tfidf", "transformers"] = Field(
        "tfidf", description="tfidf (word + char n-gram TF-IDF and logistic regression, CPU) or transformers (fine-tuned encoder)."
    )
    encoder: str = Field("xlm-roberta-base", min_length=1, description="transformers: sequence-classification encoder (hub id or folder).")
    trust_remote_code: bool = Field(False, description="transformers: allow model code from the hub. Off unless you trust it.")
    target_precision: float = Field(0.95, gt=0.0, le=1.0, description="Precision the threshold must reach on validation; recall is reported there.")
    validation_fraction: float = Field(0.25, gt=0.0, lt=0.9, description="Share of the labelled sample held out (stratified) to pick the threshold.")
    min_per_class: int = Field(20, ge=2, description="Fewest labelled documents of each class needed to train.")
    max_chars: int = Field(4000, ge=100, le=1_000_000, description="Characters of a document the classifier reads (train and score).")
    tfidf_min_df: int = Field(2, ge=1, description="tfidf: keep n-grams seen in at least this many training documents.")
    logreg_c: float = Field(4.0, gt=0, description="tfidf: inverse regularisation strength C of the logistic regression.")
    epochs: float = Field(2.0, gt=0, le=100, description="transformers: passes over the training documents.")
    learning_rate: float = Field(2e-5, gt=0, lt=1, description="transformers: peak learning rate (AdamW).")
    train_batch_size: int = Field(16, ge=1, description="transformers: documents per training step.")
    max_length: int = Field(512, ge=16, le=8192, description="transformers: tokens per document (truncated).")
    batch_size: int = Field(1024, ge=1, description="Documents scored per batch when the corpus is filtered.")
    executor: Literal["local", "datatrove", "slurm"] = Field(
        "local", description="local (in the notebook), datatrove (LocalPipelineExecutor with `tasks`) or slurm (SlurmPipelineExecutor)."
    )
    tasks: int = Field(2, ge=1, le=100_000, description="datatrove/slurm: tasks the corpus is split into.")
    workers: int = Field(-1, ge=-1, description="datatrove/slurm: tasks running at once (-1 = all).")
    slurm_partition: str | None = Field(None, description="slurm: partition to submit to (required for executor slurm).")
    slurm_time: str = Field("04:00:00", pattern=r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$", description="slurm: time limit per task ([days-]hh:mm:ss).")
    slurm_cpus_per_task: int = Field(4, ge=1, le=1024, description="slurm: CPU cores per task.")
    slurm_mem_per_cpu_gb: int = Field(2, ge=1, le=1024, description="slurm: memory per core in GB.")

    @field_validator("slurm_partition")
    @classmethod
    def _partition_for_slurm(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("executor") == "slurm" and not value:
            raise ValueError("executor slurm needs slurm_partition (the partition to submit the array job to)")
        return value


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
                                   description="Documents per (type, language); each answers every task in every format.")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of documents held out (all their examples) as the test split.")
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
        if info.data.get("teacher") == "openai" and not value:
            raise ValueError("teacher openai needs base_url, e.g. http://127.0.0.1:8000/v1")
        if value is not None and not re.match(r"^https?://", value):
            raise ValueError(f"base_url {value!r} must start with http:// or https://")
        return value

    @field_validator("judge_base_url")
    @classmethod
    def _judge_url(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("judge") == "openai" and not value:
            raise ValueError("judge openai needs judge_base_url, e.g. http://127.0.0.1:8000/v1")
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
    benchmark_limit: int = Field(1000, ge=1, description="Items per benchmark at most (seeded sample).")
    num_fewshot: int = Field(0, ge=0, le=25, description="Solved examples before each question (lm-eval's k-shot; fixed seed).")
    chat_template: bool = Field(False, description="Render MCQ contexts with the model's chat template (lm-eval's apply_chat_template).")
    mcq_batch_size: int = Field(16, ge=1, description="Choices scored per forward pass.")
    generative_limit: int = Field(120, ge=0, description="Held-out 05_synthesize test examples answered by each variant (0 = none).")
    max_new_tokens: int = Field(96, ge=1, le=8192, description="Tokens generated per held-out answer.")
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
STEP_ORDER: tuple[str, ...] = (
    "prepare",
    "annotate",
    "classify",
    "cpt",
    "merge",
    "synthesize",
    "align",
    "evaluate",
    "failure_analysis",
)
STEP_DIRS: dict[str, str] = {name: f"{i:02d}_{name}" for i, name in enumerate(STEP_ORDER)}

# Steps that are built, with their parameter models. Later steps register here when they land.
STEP_PARAMS: dict[str, type[StrictModel]] = {
    "prepare": PrepareParams,
    "annotate": AnnotateParams,
    "classify": ClassifyParams,
    "cpt": CptParams,
    "merge": MergeParams,
    "synthesize": SynthesizeParams,
    "align": AlignParams,
    "evaluate": EvaluateParams,
    "failure_analysis": FailureAnalysisParams,
}


def known_steps() -> list[str]:
    """Steps a profile may name, in recipe order."""
    return [s for s in STEP_ORDER if s in STEP_PARAMS]


# --------------------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------------------


class ProfileError(ValueError):
    """A profile with one or more problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid profile:\n" + "\n".join(f"  - {p}" for p in problems))


class Profile(BaseModel):
    """A validated profile: run parameters and the parameters of each step it names, in recipe order."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    run: RunParams
    steps: dict[str, StrictModel]

    def step_names(self) -> list[str]:
        return list(self.steps)

    def restated_defaults(self) -> list[str]:
        """``section.field`` of every value the profile states although it equals the default (a profile states
        only what differs, as nanoGPT's config files override train.py)."""
        sections = {"run": self.run, **{f"steps.{name}": params for name, params in self.steps.items()}}
        out = []
        for where, params in sections.items():
            defaults = type(params)()
            out += [f"{where}.{name}" for name in sorted(params.model_fields_set)
                    if getattr(params, name) == getattr(defaults, name)]
        return out

    def describe(self) -> str:
        """Every resolved value of the run and of each step, one per line; ``*`` marks values the profile sets."""
        lines = [f"# {self.path}  (* = set by the profile, the rest are defaults from medslm.params)"]
        sections = {"run": self.run, **{f"steps.{name}": params for name, params in self.steps.items()}}
        for where, params in sections.items():
            lines.append(f"{where}:")
            values = params.model_dump(mode="json")
            for name in type(params).model_fields:
                mark = "*" if name in params.model_fields_set else " "
                lines.append(f"  {mark} {name}: {json.dumps(values[name], ensure_ascii=False)}")
        return "\n".join(lines)

    def run_dir(self, root: Path | None = None) -> Path:
        """Absolute run directory (output_dir is resolved against the profile's project folder when loaded)."""
        out = Path(self.run.output_dir).expanduser()
        if out.is_absolute():
            return out
        base = root if root is not None else repo_root_of(self.path)
        return (base / out).resolve()


def repo_root_of(path: Path) -> Path:
    """The repository a profile belongs to: the parent of its ``params/`` folder, else its own folder."""
    path = Path(path).resolve()
    parent = path.parent
    return parent.parent if parent.name == "params" else parent


def _allowed(err: dict[str, Any], field_info: Any) -> str:
    """What a field allows, from its constraints or the validation message."""
    parts = [err["msg"]]
    if field_info is not None and field_info.description:
        parts.append(field_info.description)
    return "; ".join(parts)


def _describe(errors: list[dict[str, Any]], where: str, model: type[BaseModel]) -> list[str]:
    problems = []
    for err in errors:
        loc = ".".join(str(x) for x in err["loc"]) or "(section)"
        name = str(err["loc"][0]) if err["loc"] else ""
        value = err.get("input")
        if isinstance(value, str) and ("key" in name.lower() or looks_like_secret(value)):
            value = mask_secret(value)  # never echo a pasted API key
        elif isinstance(value, dict | list) and looks_like_secret(json.dumps(value, default=str)):
            value = mask_secret(json.dumps(value, default=str))
        if err["type"] == "extra_forbidden":
            problems.append(
                f"{where}: unknown field {loc!r} (value {value!r}); allowed fields: {', '.join(model.model_fields)}"
            )
        elif err["type"] == "missing":
            problems.append(f"{where}: field {loc!r} is required")
        else:
            problems.append(
                f"{where}: field {loc!r} has bad value {value!r}: {_allowed(err, model.model_fields.get(name))}"
            )
    return problems


# Fields that hold paths (resolved against the profile's project folder, see repo_root_of) and model references
# (a hub id or a local folder, which must then exist). One table, so every step follows the same rule.
PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "run": ("output_dir",), "prepare": ("local_files",), "annotate": ("gold_file",), "cpt": ("qa_file",),
}
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "prepare": ("base_model",), "cpt": ("base",), "merge": ("instruct", "cpt_model", "experts"),
    "align": ("start_model",), "classify": ("encoder",), "synthesize": ("rejection_model",),
    "evaluate": ("comparators",),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


def _resolve_path(value: str, root: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path).resolve())


def _resolve_model(value: str, root: Path) -> str:
    """A local folder (absolute, ``~`` or relative to ``root``) as an absolute path; a hub id as it is."""
    path = Path(value).expanduser()
    local = path if path.is_absolute() else root / path
    if local.is_dir():
        return str(local.resolve())
    if value.startswith(("/", "./", "../", "~")) or not HUB_ID.match(value):
        raise ValueError(f"{value!r} is neither an existing folder (looked for {local}) nor a hub id (owner/name)")
    return value


def resolve_profile_paths(section: str, params: StrictModel, root: Path) -> list[str]:
    """Resolve ``params``' path and model fields in place against ``root``; returns the problems (missing input
    files, model references that are neither a folder nor a hub id)."""
    problems = []
    for name in PATH_FIELDS.get(section, ()):
        value = getattr(params, name)
        if value is None:
            continue
        resolved = [_resolve_path(v, root) for v in value] if isinstance(value, list) else _resolve_path(value, root)
        if name != "output_dir":
            missing = [v for v in (resolved if isinstance(resolved, list) else [resolved]) if not Path(v).exists()]
            problems += [f"field {name!r}: no such file {m} (relative paths start at {root})" for m in missing]
        object.__setattr__(params, name, resolved)  # keep model_fields_set: `show` marks what the profile set
    if section == "annotate" and getattr(params, "backend", None) not in ("transformers", "loglik"):
        return problems  # the openai backend names a served model, not a file or hub id
    for name in MODEL_FIELDS.get(section, ()) + (("model",) if section == "annotate" else ()):
        value = getattr(params, name)
        try:
            if isinstance(value, list):
                object.__setattr__(params, name, [_resolve_model(v, root) for v in value])
            elif isinstance(value, dict):
                object.__setattr__(params, name, {k: _resolve_model(v, root) for k, v in value.items()})
            elif value is not None:
                object.__setattr__(params, name, _resolve_model(value, root))
        except ValueError as e:
            problems.append(f"field {name!r}: {e}")
    return problems


def parse_profile(data: Any, path: str | Path = "<profile>") -> Profile:
    """Validate profile data (already read from YAML); raise :class:`ProfileError` listing every problem."""
    path = Path(path)
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ProfileError([f"{path}: a profile is a mapping with 'run' and 'steps' sections, got {type(data).__name__}"])
    for key in data:
        if key not in ("run", "steps"):
            problems.append(f"{path}: unknown section {key!r}; allowed sections: run, steps")

    run = None
    root = repo_root_of(path)
    try:
        run = RunParams(**(data.get("run") or {}))
        problems += [f"{path}: run: {p}" for p in resolve_profile_paths("run", run, root)]
    except ValidationError as e:
        problems += _describe(e.errors(), f"{path}: run", RunParams)
    except TypeError:
        problems.append(f"{path}: run: must be a mapping of fields, got {data.get('run')!r}")

    steps_data = data.get("steps") or {}
    steps: dict[str, StrictModel] = {}
    if not isinstance(steps_data, dict):
        problems.append(f"{path}: steps: must be a mapping of step name to parameters, got {steps_data!r}")
        steps_data = {}
    for name, values in steps_data.items():
        model = STEP_PARAMS.get(name)
        if model is None:
            planned = f" ({name!r} is planned but not built yet)" if name in STEP_ORDER else ""
            problems.append(f"{path}: unknown step {name!r}{planned}; known steps: {', '.join(known_steps())}")
            continue
        if values is not None and not isinstance(values, dict):
            problems.append(f"{path}: step {name}: must be a mapping of fields, got {values!r}")
            continue
        try:
            steps[name] = model(**(values or {}))
            problems += [f"{path}: step {name}: {p}" for p in resolve_profile_paths(name, steps[name], root)]
        except ValidationError as e:
            problems += _describe(e.errors(), f"{path}: step {name}", model)
    if not steps_data and not problems:
        problems.append(f"{path}: steps: names no step; known steps: {', '.join(known_steps())}")
    if problems:
        raise ProfileError(problems)
    ordered = {s: steps[s] for s in STEP_ORDER if s in steps}
    return Profile(path=path.resolve(), run=run, steps=ordered)


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file; every problem is reported at once in a :class:`ProfileError`."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError([f"{path}: no such profile file"])
    return parse_profile(read_yaml(path), path)


def step_params(profile: str | Path, step: str) -> StrictModel:
    """The validated parameters of one step of a profile (its defaults when the profile does not name it)."""
    prof = load_profile(profile)
    return prof.steps.get(step) or STEP_PARAMS[step]()
