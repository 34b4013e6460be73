"""03_cpt's training loop: ``transformers.Trainer`` over packed blocks, checkpoints keyed by a fingerprint of what
is trained (``resume`` continues only a run with the same parameters and data)."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medslm.cpt.data import curriculum_dataset, pack, read_texts
from medslm.cpt.launch import is_main_process
from medslm.cpt.modes import check_setup, embedding_learning_rates
from medslm.models import ModelRef
from medslm.params import CptParams
from medslm.projection import project_training, report_projection
from medslm.rundir import RunDir
from medslm.training import (
    TrainSettings,
    build_trainer,
    checkpoint_step,
    last_checkpoint,
    loss_curve,
    run_fingerprint,
    train_or_restore,
    training_arguments,
)

_NOT_FINGERPRINTED = {"resume", "save_steps", "save_total_limit", "logging_steps", "accelerate_config",
                      "projection_batches", "warn_projected_minutes"}
CAPS = "max_steps, max_documents or epochs (fewer steps), or block_size / batch_size (fewer tokens per step)"


def fingerprint(params: CptParams, corpus_sha256: str | None = None, base: ModelRef | None = None) -> str:
    """A short hash of what a training run depends on: the parameters (except checkpointing and logging knobs),
    the corpus and the base model reference."""
    return run_fingerprint(params, _NOT_FINGERPRINTED, corpus=corpus_sha256,
                           base=base.as_dict() if isinstance(base, ModelRef) else base)


def checkpoint_dir(checkpoints: str | Path | RunDir, params: CptParams, corpus_sha256: str | None = None,
                   base: ModelRef | None = None) -> Path:
    """``<checkpoints>/run-<fingerprint>``: the Trainer's output folder for this run's checkpoints."""
    root = checkpoints.cpt.checkpoints if isinstance(checkpoints, RunDir) else Path(checkpoints)
    return root / f"run-{fingerprint(params, corpus_sha256, base)}"


def train_settings(params: CptParams, output_dir: str | Path, device: str = "auto", seed: int = 0,
                   sequential: bool = False) -> TrainSettings:
    """The :class:`~medslm.training.TrainSettings` of ``params`` (``sequential``: read the data in order, one epoch:
    used for pre-instruction tuning, whose order is the curriculum)."""
    setup = check_setup(params, device)
    extra: dict[str, Any] = {"train_sampling_strategy": "sequential"} if sequential else {}
    return TrainSettings(
        output_dir=Path(output_dir),
        learning_rate=params.learning_rate,
        epochs=1.0 if sequential else params.epochs,
        max_steps=params.max_steps,
        batch_size=params.batch_size,
        grad_accum=params.grad_accum,
        warmup=params.warmup,
        weight_decay=params.weight_decay,
        precision=setup["precision"],
        device=setup["device"],
        seed=seed,
        gradient_checkpointing=params.gradient_checkpointing and params.mode != "qlora",  # qlora: enabled by peft
        save_steps=params.save_steps,
        save_total_limit=params.save_total_limit,
        logging_steps=params.logging_steps,
        extra=extra,
    )


@dataclasses.dataclass
class TrainOutcome:
    """What :func:`train` did: the trained model and Trainer, steps, resume point, loss history, throughput."""

    model: Any
    trainer: Any
    output_dir: Path
    start_step: int
    global_step: int
    resumed_from: str | None
    history: list[dict[str, Any]]
    blocks: int
    tokens_per_step: int
    seconds: float
    phases: dict[str, int]
    projection: dict[str, Any] | None = None  # the projected wall time, measured before training

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary for metrics.json."""
        return {
            "output_dir": str(self.output_dir), "start_step": self.start_step, "global_step": self.global_step,
            "resumed_from": self.resumed_from, "blocks": self.blocks, "tokens_per_step": self.tokens_per_step,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round((self.global_step - self.start_step) * self.tokens_per_step / self.seconds, 1)
            if self.seconds > 0 else None,
            "phases": self.phases, "loss_curve": loss_curve(self.history), "projection": self.projection,
        }


def _step_recorder():
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        """Records the global step at which training (re)starts."""

        start_step = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step = state.global_step

    return StepRecorder()


def train(model: Any, tokenizer: Any, docs: Sequence[str], params: CptParams, output_dir: str | Path,
          device: str = "auto", seed: int = 0, qa: Sequence[str] | str | Path | None = None,
          callbacks: list[Any] | None = None) -> TrainOutcome:
    """Continual pre-training with ``transformers.Trainer`` (via :func:`medslm.training.build_trainer`).

    ``docs`` are packed into ``params.block_size`` blocks. ``output_dir`` receives the checkpoints (every
    ``save_steps``); with ``params.resume`` training continues from the newest checkpoint there (same global step,
    optimizer, scheduler and data position), else the folder is cleared first. With ``pre_instruction_tuning`` the
    QA texts ``qa`` (list or JSONL path) come first (see :func:`curriculum_dataset`). Embeddings/LM head get their
    own learning rate (:func:`embedding_learning_rates`).
    """
    output_dir = Path(output_dir)
    if params.pre_instruction_tuning:
        qa_texts = read_texts(qa if qa is not None else params.qa_file)
        if not qa_texts:
            raise ValueError("pre_instruction_tuning needs QA texts: pass qa= (list or JSONL path) or set qa_file")
        dataset, phases = curriculum_dataset(tokenizer, docs, params.block_size, qa_texts, params.qa_epochs,
                                             params.epochs, seed)
    else:
        dataset = pack(tokenizer, docs, params.block_size)
        phases = {"qa_blocks": 0, "doc_blocks": len(dataset)}
    if len(dataset) == 0:
        raise ValueError("no training blocks: the documents are empty")
    resume_from = last_checkpoint(output_dir) if params.resume else None
    if not params.resume and output_dir.exists() and is_main_process():
        shutil.rmtree(output_dir)
    settings = train_settings(params, output_dir, device, seed, sequential=params.pre_instruction_tuning)
    recorder = _step_recorder()
    trainer = build_trainer(model, tokenizer, dataset, settings, callbacks=[recorder, *(callbacks or [])],
                            param_lrs=embedding_learning_rates(model, params))
    projection = project_training(trainer, params.projection_batches, checkpoint_step(resume_from))
    if is_main_process():
        report_projection(projection, params.warn_projected_minutes, CAPS)
    t0 = time.perf_counter()
    train_or_restore(trainer, resume_from)
    seconds = time.perf_counter() - t0
    tokens_per_step = params.block_size * params.batch_size * params.grad_accum * max(trainer.args.world_size, 1)
    return TrainOutcome(
        model=trainer.model, trainer=trainer, output_dir=output_dir, start_step=recorder.start_step,
        global_step=trainer.state.global_step, resumed_from=resume_from, history=trainer.state.log_history,
        blocks=len(dataset), tokens_per_step=tokens_per_step, seconds=seconds, phases=phases,
        projection=projection.as_dict() if projection else None,
    )


def cpt_training_arguments(params: CptParams, output_dir: str | Path, device: str = "auto", seed: int = 0,
                           sequential: bool = False):
    """The ``transformers.TrainingArguments`` a CPT run trains with (what :func:`train` passes to the Trainer)."""
    return training_arguments(train_settings(params, output_dir, device, seed, sequential))
