"""How long a training run will take, measured before it starts (03_cpt, 06_align's SFT stage).

:func:`project_training` runs the first one or two micro-batches of a ``transformers.Trainer`` (forward and backward,
no optimizer step), times them and projects the wall time of the whole run: steps × tokens per step / tokens per
second. Everything it touches is put back (gradients back to None, random-number states, train/eval mode), so the
run that follows trains exactly as it would have without it. :func:`report_projection` prints one line and, above a
limit, a warning that names what to cap.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

# What a model's forward takes from a collated batch (trl's collator adds padding-free keys the projection ignores).
MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "position_ids")


@dataclass(frozen=True)
class Projection:
    """The projected run: ``steps`` to go, ``tokens_per_step`` (all processes), measured ``tokens_per_second``
    (all processes, assuming they scale linearly) on ``measured_batches`` micro-batches, and ``seconds``."""

    steps: int
    tokens_per_step: int
    tokens_per_second: float
    seconds: float
    measured_batches: int

    @property
    def minutes(self) -> float:
        return self.seconds / 60

    def line(self) -> str:
        """``projected 4.7 h for 5,493 steps at 82 tokens/s (512 tokens per step)``."""
        from medslm.progress import duration

        return (f"projected {duration(self.seconds)} for {self.steps:,} steps at {self.tokens_per_second:,.0f} "
                f"tokens/s ({self.tokens_per_step:,} tokens per step; measured on {self.measured_batches} "
                f"batch{'es' if self.measured_batches != 1 else ''})")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3), "tokens_per_second": round(self.tokens_per_second, 1)}


def planned_steps(args: Any, n_examples: int, world_size: int = 1) -> int:
    """The optimisation steps a Trainer with ``args`` runs over ``n_examples`` (``max_steps``, else the epochs:
    ``ceil(epochs × ceil(micro-batches per process / grad_accum))``, as ``Trainer.set_initial_training_values``)."""
    if args.max_steps > 0:
        return int(args.max_steps)
    micro = math.ceil(n_examples / (args.per_device_train_batch_size * max(world_size, 1)))
    per_epoch = max(math.ceil(micro / args.gradient_accumulation_steps), 1)
    return math.ceil(args.num_train_epochs * per_epoch)


@contextlib.contextmanager
def _state_kept(model: Any):
    """Restore what a trial forward/backward changes: gradients (None again), RNG states, train/eval mode."""
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
           torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    was_training = model.training
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if rng[3] is not None:
            torch.cuda.set_rng_state_all(rng[3])


def measure_tokens_per_second(trainer: Any, batches: int = 2) -> tuple[float, float, int]:
    """Forward and backward on the first ``batches`` micro-batches of ``trainer.train_dataset`` (collated by its
    data collator, under its autocast); returns ``(tokens per second, tokens per micro-batch, batches timed)``. With
    two or more batches the first only warms up and is not timed. Nothing is trained (see :func:`_state_kept`)."""
    model, dataset = trainer.model, trainer.train_dataset
    size = trainer.args.per_device_train_batch_size
    n = min(batches, math.ceil(len(dataset) / size))
    device = next(model.parameters()).device
    tokens, seconds, timed = 0, 0.0, 0
    with _state_kept(model):
        model.train()
        for k in range(n):
            rows = [dataset[i] for i in range(k * size, min((k + 1) * size, len(dataset)))]
            batch = {key: value.to(device) for key, value in trainer.data_collator(rows).items()
                     if key in MODEL_INPUTS}
            start = time.perf_counter()
            with trainer.autocast_smart_context_manager():
                loss = model(**batch).loss
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k > 0 or n == 1:
                seconds += time.perf_counter() - start
                tokens += batch["input_ids"].numel()
                timed += 1
    return (tokens / seconds if seconds > 0 else math.inf), tokens / max(timed, 1), timed


def project_training(trainer: Any, batches: int = 2, start_step: int = 0) -> Projection | None:
    """The projected wall time of ``trainer``'s run from ``start_step`` on (a resumed run has fewer steps to go);
    None when no step is left or ``batches`` is 0."""
    args = trainer.args
    world = max(args.world_size, 1)
    steps = planned_steps(args, len(trainer.train_dataset), world) - start_step
    if batches <= 0 or steps <= 0:
        return None
    per_process, micro_tokens, timed = measure_tokens_per_second(trainer, batches)
    tokens_per_step = round(micro_tokens * args.gradient_accumulation_steps * world)
    rate = per_process * world
    return Projection(steps=steps, tokens_per_step=tokens_per_step, tokens_per_second=rate,
                      seconds=steps * tokens_per_step / rate, measured_batches=timed)


def report_projection(projection: Projection | None, warn_minutes: float, caps: str) -> str | None:
    """Print the projection's line (and send it to ``medslm run``'s terminal); above ``warn_minutes`` also warn,
    naming ``caps`` (the parameters that shorten the run). Returns the warning, if any."""
    from medslm.progress import emit, warn

    if projection is None:
        return None
    print(projection.line(), flush=True)
    emit(projection.line())
    if projection.minutes <= warn_minutes:
        return None
    message = (f"this training run is projected to take {projection.minutes:,.0f} min, more than the "
               f"{warn_minutes:g} min of warn_projected_minutes: to shorten it, cap {caps}")
    return warn(message, stacklevel=2)
