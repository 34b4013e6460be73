"""Causal-LM training plumbing shared by the toy model's pretraining (00_prepare) and continual pre-training (03_cpt).

Data: every document is tokenized, wrapped as ``BOS doc EOS`` and the stream is cut into fixed-length blocks
(``group_texts`` packing). No token is lost to truncation: the final partial block is kept (padded, with its padding
masked out of the loss). Training: a plain ``transformers.Trainer`` with
``DataCollatorForLanguageModeling(mlm=False)``, linear decay after warm-up, AdamW.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def document_bos(tokenizer: Any) -> int | None:
    """The token that opens each packed document: BOS, unless the tokenizer has none or its BOS is a chat marker
    that its chat template writes before every turn (SmolLM2's ``<|im_start|>``): a document is then separated by
    the EOS before it alone, as such models were pretrained, never wrapped as ``<|im_start|>text<|im_end|>``."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    if tokenizer.bos_token and tokenizer.bos_token in (getattr(tokenizer, "chat_template", None) or ""):
        return None
    return bos


def tokenize_documents(tokenizer: Any, texts: Iterable[str], add_bos: bool = True) -> list[list[int]]:
    """Token ids of each document as ``[BOS] + ids + [EOS]`` (BOS per :func:`document_bos`)."""
    bos_id = document_bos(tokenizer) if add_bos else None
    bos = [bos_id] if bos_id is not None else []
    eos = [tokenizer.eos_token_id]
    texts = list(texts)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [bos + ids + eos for ids in encoded]


def pack_blocks(docs: Sequence[Sequence[int]], block_size: int, pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Concatenate documents and cut the stream into ``block_size`` blocks (group_texts packing).

    Returns ``(input_ids, attention_mask)``. The last block is padded with ``pad_id`` and mask 0, so every token of
    every document lands in exactly one block.
    """
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2, got {block_size}")
    stream = [t for d in docs for t in d]
    blocks, masks = [], []
    for start in range(0, len(stream), block_size):
        chunk = stream[start : start + block_size]
        n_pad = block_size - len(chunk)
        blocks.append(list(chunk) + [pad_id] * n_pad)
        masks.append([1] * len(chunk) + [0] * n_pad)
    return blocks, masks


def packed_dataset(tokenizer: Any, texts: Iterable[str], block_size: int):
    """A ``datasets.Dataset`` of packed blocks (``input_ids``, ``attention_mask``) ready for the LM collator."""
    from datasets import Dataset

    docs = tokenize_documents(tokenizer, texts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask = pack_blocks(docs, block_size, pad)
    return Dataset.from_dict({"input_ids": ids, "attention_mask": mask})


class _MaskedLMCollator:
    """Causal-LM collator: labels are the inputs with padding (attention_mask 0) set to -100.

    ``DataCollatorForLanguageModeling(mlm=False)`` masks by pad-token id; since the toy tokenizer's pad id differs
    from EOS this is equivalent there, but masking by ``attention_mask`` stays right when pad == EOS.
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([f["input_ids"] for f in features], dtype=torch.long)
        mask = torch.tensor([f["attention_mask"] for f in features], dtype=torch.long)
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lm_collator(tokenizer: Any):
    """The collator for packed blocks: transformers' LM collator when pad and EOS differ, else mask-based."""
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    return _MaskedLMCollator()


@dataclass
class TrainSettings:
    """The knobs of one training run (mirrors the step parameters)."""

    output_dir: Path
    learning_rate: float = 1e-3
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    grad_accum: int = 1
    warmup: float = 0.05  # < 1: a ratio of the total steps; >= 1: a number of steps
    weight_decay: float = 0.0
    precision: str = "fp32"
    device: str = "cpu"
    seed: int = 0
    gradient_checkpointing: bool = False
    save_steps: int = 0  # 0: no intermediate checkpoints
    save_total_limit: int | None = None  # keep only the newest N checkpoints (None: all)
    logging_steps: int = 10
    disable_tqdm: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def training_arguments(s: TrainSettings):
    """``TrainingArguments`` for a causal-LM run (linear decay after warm-up, AdamW, no external reporting)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(s.output_dir),
        learning_rate=s.learning_rate,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        warmup_steps=s.warmup,
        lr_scheduler_type="linear",
        weight_decay=s.weight_decay,
        bf16=s.precision == "bf16",
        fp16=s.precision == "fp16",
        use_cpu=s.device == "cpu",
        seed=s.seed,
        data_seed=s.seed,
        activation_checkpointing=s.gradient_checkpointing,  # the 5.x name of gradient_checkpointing
        save_strategy="steps" if s.save_steps else "no",
        save_steps=s.save_steps or 500,
        save_total_limit=s.save_total_limit,
        logging_steps=s.logging_steps,
        logging_first_step=True,
        report_to=[],
        disable_tqdm=s.disable_tqdm,
        dataloader_num_workers=0,
        **s.extra,
    )


_TRAINER_CLASS: Any = None


def _lm_trainer_class():
    """``transformers.Trainer`` with optional per-parameter learning rates (built lazily: transformers is heavy)."""
    global _TRAINER_CLASS
    if _TRAINER_CLASS is None:
        from transformers import Trainer

        class LMTrainer(Trainer):
            """A Trainer whose AdamW gives parameters whose name contains a key of ``param_lrs`` that learning rate.

            Used to train embeddings / lm_head with a smaller rate than LoRA adapters. The optimizer is built inside
            the Trainer (not passed through ``optimizers=``), so it also works when FSDP wraps the model first; the
            scheduler (warm-up, linear decay) scales every group by the same factor.
            """

            def __init__(self, *args: Any, param_lrs: dict[str, float] | None = None, **kwargs: Any):
                self.param_lrs = dict(param_lrs or {})
                super().__init__(*args, **kwargs)

            def create_optimizer(self, model: Any = None):
                if self.optimizer is not None or not self.param_lrs:
                    return super().create_optimizer(model)
                opt_model = self.model if model is None else model
                self.optimizer = grouped_optimizer(opt_model, self.args.learning_rate, self.param_lrs,
                                                   self.args.weight_decay,
                                                   set(self.get_decay_parameter_names(opt_model)))
                return self.optimizer

        _TRAINER_CLASS = LMTrainer
    return _TRAINER_CLASS


def parameter_groups(model: Any, learning_rate: float, param_lrs: dict[str, float] | None = None,
                     weight_decay: float = 0.0, decay_names: set[str] | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups of the trainable parameters: a parameter whose name contains a key of
    ``param_lrs`` gets that learning rate (first matching key wins), the others ``learning_rate``. Weight decay
    applies to ``decay_names`` only (all parameters when None). Each group records its ``names``."""
    param_lrs = param_lrs or {}
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = next((v for k, v in param_lrs.items() if k in name), learning_rate)
        wd = weight_decay if decay_names is None or name in decay_names else 0.0
        group = groups.setdefault((lr, wd), {"params": [], "names": [], "lr": lr, "weight_decay": wd})
        group["params"].append(p)
        group["names"].append(name)
    # Groups at the main learning rate first: the Trainer logs the learning rate of group 0.
    return sorted(groups.values(), key=lambda g: g["lr"] != learning_rate)


def grouped_optimizer(model: Any, learning_rate: float, param_lrs: dict[str, float] | None = None,
                      weight_decay: float = 0.0, decay_names: set[str] | None = None):
    """``torch.optim.AdamW`` over :func:`parameter_groups` (usable directly or through ``optimizers=``)."""
    groups = parameter_groups(model, learning_rate, param_lrs, weight_decay, decay_names)
    if not groups:
        raise ValueError("the model has no trainable parameter: nothing to optimise")
    return torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=learning_rate)


def build_trainer(model: Any, tokenizer: Any, dataset: Any, settings: TrainSettings,
                  optimizers: tuple[Any, Any] = (None, None), callbacks: list[Any] | None = None,
                  param_lrs: dict[str, float] | None = None):
    """The ``Trainer`` :func:`train_lm` uses, for callers that need its state (global step, checkpoints).
    Training progress (step, loss, ETA) reaches ``medslm run``'s terminal through :mod:`medslm.progress`."""
    from medslm.progress import trainer_callback

    return _lm_trainer_class()(
        model=model,
        args=training_arguments(settings),
        train_dataset=dataset,
        data_collator=lm_collator(tokenizer),
        processing_class=tokenizer,
        optimizers=optimizers,
        callbacks=[trainer_callback(), *(callbacks or [])],
        param_lrs=param_lrs,
    )


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why a ``checkpoint-N`` folder cannot be resumed from (None when it is complete).

    The Trainer writes ``trainer_state.json`` last, so a kill mid-save leaves it missing or cut off; weights
    (``*.safetensors``) must hold every byte their header declares and torch files (``*.pt``, ``*.pth``) must be
    complete zip archives. Only headers and zip directories are read: cheap on large models."""
    import json
    import struct
    import zipfile

    folder = Path(folder)
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{state.name} is missing or incomplete"
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with path.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (OSError, ValueError, struct.error, KeyError, TypeError):
            return f"{path.name} has no readable header"
        if path.stat().st_size < 8 + length + end:
            return f"{path.name} is cut off ({path.stat().st_size} of {8 + length + end} bytes)"
    for path in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):
        try:
            zipfile.ZipFile(path).close()
        except (OSError, zipfile.BadZipFile):
            return f"{path.name} is not a complete torch file"
    return None


def last_checkpoint(folder: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder under ``folder`` (None when there is none or the folder is
    missing). A newer, half-written checkpoint (a kill during saving) is removed with a message, and the previous
    one is used: resume never fails on a checkpoint the Trainer did not finish."""
    import re
    import shutil

    from medslm.progress import emit

    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        message = f"checkpoint {path} is incomplete ({problem}): removed; resuming from the one before"
        print(message)
        emit(message)
        shutil.rmtree(path)
    return None


def checkpoint_step(checkpoint: str | Path | None) -> int:
    """The global step a ``checkpoint-N`` folder was saved at (0 for None: a fresh run)."""
    if not checkpoint:
        return 0
    from transformers import TrainerState

    return TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json")).global_step


def train_or_restore(trainer: Any, resume_from: str | None) -> None:
    """``trainer.train(resume_from_checkpoint=resume_from)``, except when that checkpoint already holds the finished
    run (a kill after training, during evaluation or saving): then its weights and state are loaded and nothing is
    trained. The Trainer itself would train one step more on every such resume (measured: 24 → 25 → 26 steps with
    ``max_steps=24``), so a resumed run would not give the uninterrupted run's model."""
    from transformers import TrainerState

    if resume_from:
        state = TrainerState.load_from_json(str(Path(resume_from) / "trainer_state.json"))
        if state.max_steps and state.global_step >= state.max_steps:
            trainer._load_from_checkpoint(resume_from)  # the Trainer's own loader (weights or adapter)
            trainer.state = state
            return
    trainer.train(resume_from_checkpoint=resume_from)


def train_lm(model: Any, tokenizer: Any, dataset: Any, settings: TrainSettings, resume: bool | str = False,
             optimizers: tuple[Any, Any] = (None, None), callbacks: list[Any] | None = None,
             param_lrs: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Train with ``transformers.Trainer``; return the log history (loss per logging step).

    ``resume``: False (fresh), True (the last checkpoint in ``settings.output_dir``; the Trainer raises when there
    is none) or a checkpoint path. ``param_lrs``: per-parameter learning rates (see :func:`parameter_groups`).
    """
    trainer = build_trainer(model, tokenizer, dataset, settings, optimizers, callbacks, param_lrs)
    if resume is True:  # the newest complete checkpoint; none: the Trainer raises, as documented
        resume = last_checkpoint(settings.output_dir) or True
    if resume is True:
        trainer.train(resume_from_checkpoint=True)
    else:
        train_or_restore(trainer, resume or None)
    return trainer.state.log_history


def run_fingerprint(params: Any, ignore: Iterable[str] = (), **parts: Any) -> str:
    """A short hash of what a training run depends on: the parameter values (except ``ignore``: checkpointing and
    logging knobs) and ``parts`` (data digest, base model, …). Checkpoint folders are named by it, so ``resume``
    continues only a run with the same parameters and data."""
    import hashlib
    import json

    ignore = set(ignore)
    blob = {k: v for k, v in params.model_dump(mode="json").items() if k not in ignore}
    blob.update(parts)
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def loss_curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, loss) pairs from a Trainer log history."""
    return [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]
