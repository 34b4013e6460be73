"""Loading and saving models and tokenizers, precision choice, LoRA/QLoRA configs and memory figures.

Security defaults: safetensors only (``use_safetensors=True``), ``trust_remote_code`` off unless a parameter turns
it on. A model reference is a hub id or a local folder; local folders never touch the network.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but no CUDA GPU is visible; use device: auto or cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda")
    return device


def choose_precision(device: str, precision: Precision = "auto") -> str:
    """Training/inference precision: fp32 on CPU (bf16 there is 5–45× slower), bf16 on GPUs that support it
    (Ampere and newer), fp16 on older GPUs such as T4 or P100. An explicit choice is checked, not overridden."""
    device = resolve_device(device)
    if precision != "auto":
        if device == "cpu" and precision == "fp16":
            raise ValueError("precision fp16 is not supported for training on a CPU; use fp32 (or auto)")
        if device == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError("this GPU does not support bf16 (pre-Ampere, e.g. T4/P100); use fp16 or auto")
        return precision
    if device == "cpu":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name (fp32, bf16, fp16)."""
    try:
        return _DTYPES[precision]
    except KeyError:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(_DTYPES)}") from None


def is_local(ref: str | Path) -> bool:
    """Whether a model reference is a local folder (else it is taken as a hub id)."""
    return Path(ref).expanduser().is_dir()


@dataclass(frozen=True)
class ModelRef:
    """A model to load: a hub id or a local folder, the hub revision, and whether its own code may run."""

    ref: str
    revision: str | None = None
    trust_remote_code: bool = False

    @property
    def local(self) -> bool:
        return is_local(self.ref)

    def hub_kwargs(self) -> dict[str, Any]:
        """``revision`` and ``trust_remote_code`` as :func:`load_model` / :func:`load_tokenizer` take them."""
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "revision": self.revision, "trust_remote_code": self.trust_remote_code}

    @classmethod
    def of(cls, ref: ModelRef | str | Path) -> ModelRef:
        """A reference from a ModelRef or a plain id/folder (no revision, no remote code)."""
        return ref if isinstance(ref, ModelRef) else cls(str(ref))


BASE_MODEL_FILE = "00_prepare/base_model.json"
TOY_MODEL_DIR = "00_prepare/model"


def base_model_ref(run_dir: str | Path) -> ModelRef:
    """The run's base instruct model, as 00_prepare recorded it: ``base_model.json`` (a hub id, or a folder —
    relative paths are taken from the run folder, so a copied run uses its own copy), else the toy world's
    ``00_prepare/model``."""
    import json

    run_dir = Path(run_dir)
    info_file = run_dir / BASE_MODEL_FILE
    if info_file.is_file():
        info = json.loads(info_file.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or not isinstance(info.get("ref"), str):
            raise ValueError(f"{info_file}: expected an object with a string field 'ref', got {info!r}")
        ref = info["ref"]
        if not Path(ref).is_absolute() and (run_dir / ref).is_dir():
            ref = str((run_dir / ref).resolve())
        return ModelRef(ref, info.get("revision"), bool(info.get("trust_remote_code", False)))
    if (run_dir / TOY_MODEL_DIR / "config.json").is_file():
        return ModelRef(str((run_dir / TOY_MODEL_DIR).resolve()))
    raise FileNotFoundError(f"no base model in {run_dir / '00_prepare'}: run 00_prepare (it writes "
                            f"{BASE_MODEL_FILE}), or name the model in this step's parameters")


def resolve_model(ref: str | None, run_dir: str | Path | None, revision: str | None = None,
                  trust_remote_code: bool = False) -> ModelRef:
    """The one resolver of "which model": ``ref`` when a step's parameters name one, else the run's base model
    (:func:`base_model_ref`). A step's own ``trust_remote_code`` can only add permission, never remove it."""
    if ref:
        return ModelRef(str(ref), revision, trust_remote_code)
    if run_dir is None:
        raise ValueError("no model named and no run folder to take 00_prepare's base model from")
    base = base_model_ref(run_dir)
    return ModelRef(base.ref, base.revision, base.trust_remote_code or trust_remote_code)


def _hub_kwargs(ref: str | Path, revision: str | None, trust_remote_code: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
    if not is_local(ref):
        kwargs["revision"] = revision
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            kwargs["local_files_only"] = True
    return kwargs


def load_tokenizer(ref: str | Path, revision: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer from a local folder or hub id; a pad token is set (EOS) when the tokenizer has none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ref), **_hub_kwargs(ref, revision, trust_remote_code))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    ref: str | Path,
    *,
    device: str = "auto",
    precision: Precision = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    quantization_config: Any = None,
):
    """Load a causal LM (safetensors only) in the chosen precision on the chosen device."""
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    dtype = torch_dtype(choose_precision(dev, precision))
    kwargs = _hub_kwargs(ref, revision, trust_remote_code)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": 0} if dev == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(ref), dtype=dtype, use_safetensors=True, **kwargs)
    except OSError as e:
        where = "local folder" if is_local(ref) else "hub id"
        raise OSError(
            f"could not load model {str(ref)!r} ({where}) as safetensors: {e}. medslm loads safetensors only; "
            "a hub id needs network access (or a filled HF cache with HF_HUB_OFFLINE=1)."
        ) from e
    if quantization_config is None:
        model.to(dev)
    return model


def save_model(model: Any, tokenizer: Any, path: str | Path, max_shard_size: str = "2GB") -> Path:
    """Save model (safetensors) and tokenizer into an HF folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True, max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def source_dtype(ref: ModelRef | str) -> str | None:
    """The dtype a model's config records (``bfloat16`` for most hub models), None when it records none."""
    from transformers import AutoConfig

    ref = ModelRef.of(ref)
    config = AutoConfig.from_pretrained(ref.ref, **_hub_kwargs(ref.ref, ref.revision, ref.trust_remote_code))
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(dtype).removeprefix("torch.") if dtype else None


def cast_saved_model(folder: str | Path, dtype: str | None) -> Path:
    """Rewrite a saved model folder in ``dtype`` (e.g. the source model's bfloat16 after float32 training, so a
    270 MB model does not come back as 540 MB); a no-op when it already is, or when ``dtype`` is None."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if dtype is None or source_dtype(str(folder)) == dtype:
        return folder
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), use_safetensors=True)
    for old in [*folder.glob("*.safetensors"), *folder.glob("*.safetensors.index.json")]:
        old.unlink()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def merge_lora_adapter(
    base_ref: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    tokenizer: Any = None,
    device: str = "cpu",
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Merge a LoRA/QLoRA adapter into a full-precision reload of its base (fp32 on a CPU, bf16/fp16 on a GPU —
    never into 4-bit weights) and save the full model with the tokenizer (the adapter's when it has one)."""
    from peft import PeftModel

    dev = resolve_device(device)
    model = load_model(base_ref, device=dev, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer is None:
        has_own = (Path(adapter_dir) / "tokenizer_config.json").is_file()
        tokenizer = load_tokenizer(adapter_dir if has_own else base_ref, revision=None if has_own else revision,
                                   trust_remote_code=trust_remote_code)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    merged = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False).merge_and_unload()
    merged.config.use_cache = True
    return save_model(merged, tokenizer, out_dir)


def bnb_4bit_config(device: str, compute_precision: Precision = "auto"):
    """NF4 double-quantised bitsandbytes config. Compute dtype: fp32 on a CPU, bf16/fp16 on GPUs."""
    from transformers import BitsAndBytesConfig

    dev = resolve_device(device)
    compute = torch_dtype(choose_precision(dev, compute_precision))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def lora_config(
    target_modules: list[str] | str,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    modules_to_save: list[str] | None = None,
):
    """A peft LoRA config for causal language modelling."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
    )


@dataclass
class ModelStats:
    """Parameter counts and memory of a model."""

    parameters: int
    trainable: int
    bytes: int
    dtype: str

    @property
    def megabytes(self) -> float:
        return self.bytes / 2**20

    def as_dict(self) -> dict[str, Any]:
        return {"parameters": self.parameters, "trainable": self.trainable, "bytes": self.bytes,
                "megabytes": round(self.megabytes, 3), "dtype": self.dtype}


def parameter_count(param: torch.Tensor) -> int:
    """The number of weights a parameter stands for: a bitsandbytes 4-bit ``Params4bit`` packs two weights per
    byte, so its ``numel()`` is half its real count; its ``quant_state.shape`` is the shape of the real matrix."""
    shape = getattr(getattr(param, "quant_state", None), "shape", None)
    return math.prod(shape) if shape is not None else param.numel()


def model_stats(model: torch.nn.Module) -> ModelStats:
    """Parameter count (4-bit weights counted as the weights they stand for), trainable count, bytes of parameters
    and buffers (as stored), and the main dtype."""
    params = list(model.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in params)
    n_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    dtypes: dict[str, int] = {}
    for p in params:
        dtypes[str(p.dtype).removeprefix("torch.")] = dtypes.get(str(p.dtype).removeprefix("torch."), 0) + p.numel()
    main = max(dtypes, key=dtypes.get) if dtypes else "none"
    return ModelStats(
        parameters=sum(parameter_count(p) for p in params),
        trainable=sum(parameter_count(p) for p in params if p.requires_grad),
        bytes=n_bytes,
        dtype=main,
    )


# --------------------------------------------------------------------------------------------------------------
# Training memory: a rough rule, stated once (README's profile table is printed from it and a test checks it)
# --------------------------------------------------------------------------------------------------------------

BYTES_PER_PARAMETER = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "nf4": 0.55}  # nf4: 4 bits + block-wise constants
LORA_TRAINABLE_SHARE = 0.01  # rank-16 adapters on attention + MLP: ~0.5 % of a 7-8 B model, 3.5 % of SmolLM2-135M (measured)
ACTIVATION_SHARE = 0.25  # activations (checkpointed, a few thousand tokens per GPU) as a share of the weights' bytes
GiB = 1024**3


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes one GPU needs to train a model: weights, gradients, AdamW states, activations (rough) and their sum."""

    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def training_memory(params_count: float, mode: str, precision: str, gpus: int = 1) -> TrainingMemory:
    """Rough memory per GPU to train ``params_count`` parameters.

    * full: weights, gradients and AdamW's two states, all in the weights' dtype (torch keeps the states in the
      parameter's dtype): 4 x bytes per parameter (16 in fp32, 8 in bf16); with ``gpus`` > 1 FSDP shards all three.
    * lora / qlora: the frozen base (bf16/fp16/fp32, or NF4 for qlora, sharded over ``gpus`` too) plus
      :data:`LORA_TRAINABLE_SHARE` of the parameters trained in fp32 (weights, gradients, two states: 16 bytes).
    * activations: :data:`ACTIVATION_SHARE` x the weights' bytes in the compute precision, not sharded.
    """
    if mode not in ("full", "lora", "qlora"):
        raise ValueError(f"mode {mode!r} is not one of full, lora, qlora")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision {precision!r} is not one of fp32, bf16, fp16")
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    compute = BYTES_PER_PARAMETER[precision]
    activations = ACTIVATION_SHARE * params_count * compute
    if mode == "full":
        per_gpu = params_count * compute / gpus
        return TrainingMemory(per_gpu, per_gpu, 2 * per_gpu, activations)
    base = params_count * BYTES_PER_PARAMETER["nf4" if mode == "qlora" else precision] / gpus
    trainable = LORA_TRAINABLE_SHARE * params_count * BYTES_PER_PARAMETER["fp32"]
    return TrainingMemory(base + trainable, trainable, 2 * trainable, activations)
