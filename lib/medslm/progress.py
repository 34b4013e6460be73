"""Progress lines a long step shows in the terminal of ``medslm run`` (training steps with loss and ETA,
evaluation batches), without flooding it.

The runner sets ``MEDSLM_PROGRESS`` to a file before papermill starts a notebook's kernel (which inherits the
environment); library code appends one line there at most every ``interval_s`` seconds (:class:`Throttle`), and
the runner prints the new lines while the notebook runs (:func:`follow`). Outside ``medslm run`` (JupyterLab,
tests) the variable is unset and nothing is written: tqdm bars show progress there.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

ENV = "MEDSLM_PROGRESS"
INTERVAL_S = 10.0
T = TypeVar("T")


def emit(text: str) -> None:
    """Append one progress line to the file ``MEDSLM_PROGRESS`` names (nothing when it is unset)."""
    path = os.environ.get(ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(text.replace("\n", " ") + "\n")


def warn(message: str, stacklevel: int = 2) -> str:
    """A ``UserWarning`` (shown in the notebook) that also reaches ``medslm run``'s terminal; returns the message.
    ``stacklevel`` counts from the caller, as in ``warnings.warn``."""
    warnings.warn(message, stacklevel=stacklevel + 1)
    emit(message)
    return message


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Throttle:
    """Lets a line through on the first call, then at most once every ``interval_s`` seconds (and when forced)."""

    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s, self.clock = interval_s, clock
        self.last: float | None = None

    def due(self, force: bool = False) -> bool:
        now = self.clock()
        if force or self.last is None or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


def rate_line(label: str, done: int, total: int | None, elapsed: float, unit: str = "", extra: str = "") -> str:
    """``label: 40/200 steps · loss 3.210 · 12 s elapsed · ETA 48 s``."""
    parts = [f"{label}: {done}/{total}{unit}" if total else f"{label}: {done}{unit}"]
    if extra:
        parts.append(extra)
    parts.append(f"{duration(elapsed)} elapsed")
    if total and done:
        parts.append(f"ETA {duration(elapsed / done * (total - done))}")
    return " · ".join(parts)


def iter_progress(items: Iterable[T], label: str, total: int | None = None, unit: str = "",
                  interval_s: float = INTERVAL_S) -> Iterator[T]:
    """Yield ``items``, emitting ``label: i/total · elapsed · ETA`` at most every ``interval_s`` and at the end."""
    if not os.environ.get(ENV):
        yield from items
        return
    throttle, start, done = Throttle(interval_s), time.monotonic(), 0
    for item in items:
        yield item
        done += 1
        if throttle.due(force=done == total):
            emit(rate_line(label, done, total, time.monotonic() - start, unit))


def trainer_callback(label: str = "train", interval_s: float = INTERVAL_S) -> Any:
    """A ``transformers.TrainerCallback`` emitting ``label: step n/N · loss · elapsed · ETA`` at most every
    ``interval_s`` seconds, and one line when training ends (built lazily: transformers is heavy to import)."""
    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        def __init__(self) -> None:
            self.throttle = Throttle(interval_s)
            self.start, self.first_step, self.loss = time.monotonic(), 0, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.first_step = time.monotonic(), state.global_step
            if state.global_step:
                emit(f"{label}: resuming at step {state.global_step}/{state.max_steps}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
                self.on_step_end(args, state, control)

        def on_step_end(self, args, state, control, **kwargs):
            if self.loss is not None and self.throttle.due():  # the Trainer logs a step's loss after its end
                done, total = state.global_step - self.first_step, state.max_steps - self.first_step
                extra = f"loss {self.loss:.3f}" if self.loss is not None else ""
                line = rate_line(label, done, total, time.monotonic() - self.start, " steps", extra)
                emit(line.replace(f"{done}/{total} steps", f"step {state.global_step}/{state.max_steps}", 1))

        def on_train_end(self, args, state, control, **kwargs):
            loss = f", last loss {self.loss:.3f}" if self.loss is not None else ""
            emit(f"{label}: finished {state.global_step} steps in {duration(time.monotonic() - self.start)}{loss}")

    return TrainingProgress()


@contextlib.contextmanager
def follow(path: Path, show: Callable[[str], None], prefix: str = "    ", poll_s: float = 0.5) -> Iterator[Path]:
    """Point ``MEDSLM_PROGRESS`` at ``path`` (emptied first) and show each new line while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    stop = threading.Event()
    position = 0

    def show_new() -> None:
        nonlocal position
        with path.open("rb") as f:
            f.seek(position)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        position += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            show(prefix + line)

    def loop() -> None:
        while not stop.wait(poll_s):
            show_new()

    previous = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    thread = threading.Thread(target=loop, name="medslm-progress", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        show_new()
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
