"""06_align's trl configs and trainers: ``SFTConfig``/``SFTTrainer`` and ``DPOConfig``/``DPOTrainer``.

Precision follows :func:`medslm.models.choose_precision` (fp32 on a CPU, bf16 where supported, fp16 on a T4: trl
defaults to bf16 and would fail on a CPU). LoRA/QLoRA go through trl's own ``peft_config``; for QLoRA the model is
loaded in 4-bit NF4 first and trl prepares it for k-bit training. The DPO reference is done right: with adapters it is
the model with the adapter switched off (trl's default for a ``peft_config``); in full fine-tuning it is an explicit,
frozen copy loaded from the SFT folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medslm.models import ModelRef, bnb_4bit_config, choose_precision, load_model, lora_config
from medslm.params import AlignParams


def _common_args(params: AlignParams, output_dir: str | Path, device: str, seed: int) -> dict[str, Any]:
    """TrainingArguments fields SFT and DPO share."""
    precision = choose_precision(device, params.precision)
    return dict(
        output_dir=str(output_dir), gradient_accumulation_steps=params.grad_accum, warmup_steps=params.warmup,
        lr_scheduler_type="linear", bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
        seed=seed, data_seed=seed, activation_checkpointing=params.gradient_checkpointing and params.mode != "qlora",
        save_strategy="steps" if params.save_steps else "no", save_steps=params.save_steps or 500,
        save_total_limit=2, logging_steps=params.logging_steps, logging_first_step=True, report_to=[],
        disable_tqdm=True, dataloader_num_workers=0, max_length=params.max_length,
    )


def sft_config(params: AlignParams, output_dir: str | Path, device: str = "cpu", seed: int = 0):
    """trl's ``SFTConfig``: assistant-only loss on conversational data, optional packing (bfd, padding-free)."""
    from trl import SFTConfig

    return SFTConfig(
        **_common_args(params, output_dir, device, seed),
        learning_rate=params.sft_learning_rate,
        num_train_epochs=params.sft_epochs,
        per_device_train_batch_size=params.sft_batch_size,
        assistant_only_loss=params.assistant_only_loss,
        packing=params.packing,
    )


def dpo_config(params: AlignParams, output_dir: str | Path, device: str = "cpu", seed: int = 0):
    """trl's ``DPOConfig``: beta, the loss list, optional precomputed reference log-probs."""
    from trl import DPOConfig

    return DPOConfig(
        **_common_args(params, output_dir, device, seed),
        learning_rate=params.dpo_learning_rate,
        num_train_epochs=params.dpo_epochs,
        per_device_train_batch_size=params.dpo_batch_size,
        per_device_eval_batch_size=params.dpo_batch_size,
        beta=params.beta,
        loss_type=list(params.loss_type),
        precompute_ref_log_probs=params.precompute_ref_log_probs,
    )


def peft_config(params: AlignParams):
    """The ``peft.LoraConfig`` of modes lora/qlora (None for full fine-tuning)."""
    if params.mode == "full":
        return None
    return lora_config(list(params.target_modules), r=params.lora_r, alpha=params.lora_alpha,
                       dropout=params.lora_dropout)


def load_policy(params: AlignParams, ref: ModelRef, device: str):
    """The model to train: full precision for full/LoRA training, 4-bit NF4 for QLoRA."""
    precision = choose_precision(device, params.precision)
    quantization = bnb_4bit_config(device, precision) if params.mode == "qlora" else None
    load_precision = "fp32" if params.mode == "full" else precision
    model = load_model(ref.ref, device=device, precision=precision if quantization else load_precision,
                       quantization_config=quantization, **ref.hub_kwargs())
    model.config.use_cache = False
    return model


def load_reference(params: AlignParams, ref: ModelRef, device: str):
    """DPO's reference: None with adapters (trl switches the adapter off), else a frozen copy of ``ref``."""
    if params.mode != "full":
        return None
    model = load_model(ref.ref, device=device, precision=choose_precision(device, params.precision), **ref.hub_kwargs())
    model.eval()
    model.requires_grad_(False)
    return model


def sft_trainer(model: Any, tokenizer: Any, train_dataset: Any, args: Any, peft: Any = None, callbacks=None):
    """``trl.SFTTrainer`` on conversational ``messages`` data."""
    from trl import SFTTrainer

    from medslm.progress import trainer_callback

    return SFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                      peft_config=peft, callbacks=[trainer_callback("sft"), *(callbacks or [])])


def dpo_trainer(model: Any, ref_model: Any, tokenizer: Any, train_dataset: Any, eval_dataset: Any, args: Any,
                peft: Any = None, callbacks=None):
    """``trl.DPOTrainer`` on conversational prompt/chosen/rejected data."""
    from trl import DPOTrainer

    from medslm.progress import trainer_callback

    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train_dataset,
                      eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=peft,
                      callbacks=[trainer_callback("dpo"), *(callbacks or [])])
