"""What every notebook does first and last: validate its parameters, find the run, write metrics.

In a notebook::

    ctx = start_step("prepare", globals())   # validates the parameters cell, seeds, creates <run>/00_prepare/
    p, rd = ctx.params, ctx.rundir
    ...
    finish_step(ctx, metrics)                # writes <run>/00_prepare/metrics.json
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medslm.params import STEP_PARAMS, RunParams, StrictModel, load_profile
from medslm.rundir import RunDir, StepDir, write_json


@dataclass
class StepContext:
    """A notebook's validated parameters, the run parameters and its folders."""

    step: str
    params: StrictModel
    run: RunParams
    rundir: RunDir

    @property
    def dir(self) -> StepDir:
        return self.rundir.step(self.step)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (when installed)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def start_step(step: str, namespace: Mapping[str, Any]) -> StepContext:
    """Validate the parameters cell (``namespace`` = ``globals()``), read the run section of ``profile``,
    seed everything and create the step folder under ``run_dir``."""
    params = STEP_PARAMS[step].from_namespace(namespace)
    profile = namespace.get("profile")
    run = load_profile(profile).run if profile and Path(profile).is_file() else RunParams()
    rd = RunDir(namespace["run_dir"])
    rd.step(step).path.mkdir(parents=True, exist_ok=True)
    rd.step(step).figures.mkdir(exist_ok=True)
    seed_everything(run.seed)
    return StepContext(step=step, params=params, run=run, rundir=rd)


def finish_step(ctx: StepContext, metrics: dict[str, Any]) -> Path:
    """Write the step's metrics.json (with its parameters) and return its path."""
    return write_json(ctx.dir.metrics, {"step": ctx.step, "params": ctx.params.model_dump(mode="json"), **metrics})
