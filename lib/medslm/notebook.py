"""What every notebook does first and last: validate its parameters, find the run, write metrics.

In a notebook::

    ctx = start_step("prepare", globals())   # validates the parameters cell, seeds, creates <run>/00_prepare/
    params, run = ctx.params, ctx.rundir
    ...
    finish_step(ctx, metrics)                # writes <run>/00_prepare/metrics.json

Each notebook's cell tagged ``parameters`` is *generated* from the step's pydantic model
(:func:`parameters_cell_source`; ``medslm cells`` rewrites them), so a default is stated once, in
:mod:`medslm.params`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medslm.params import STEP_DIRS, STEP_PARAMS, RunParams, StrictModel, load_profile
from medslm.rundir import RunDir, StepDir, write_json


@dataclass
class StepContext:
    """A notebook's validated parameters, the run parameters, its folders and the profile it came from."""

    step: str
    params: StrictModel
    run: RunParams
    rundir: RunDir
    profile: Path | None = None

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
    return StepContext(step=step, params=params, run=run, rundir=rd,
                       profile=Path(profile).resolve() if profile and Path(profile).is_file() else None)


def write_step_metrics(out: StepDir, step: str, params: StrictModel, metrics: dict[str, Any]) -> Path:
    """Write a step's metrics.json: the step name, its parameters and the metrics (notebook and launcher alike)."""
    return write_json(out.metrics, {"step": step, "params": params.model_dump(mode="json"), **metrics})


def finish_step(ctx: StepContext, metrics: dict[str, Any]) -> Path:
    """Write the step's metrics.json (with its parameters) and return its path."""
    return write_step_metrics(ctx.dir, ctx.step, ctx.params, metrics)


# --------------------------------------------------------------------------------------------------------------
# Parameters cells, generated from the step models
# --------------------------------------------------------------------------------------------------------------

CELL_HEADER = (
    "# Parameters: papermill injects a profile's values below this cell. Generated from medslm.params\n"
    "# (the single source of every default, = params/smoke.yaml): change a default there, then `make cells`.\n"
)
CELL_FOOTER = (
    "# The run directory (the runner passes an absolute path).\n"
    "run_dir = '../outputs/smoke'\n"
    "# The profile whose run section (seed, language, device) applies.\n"
    "profile = '../params/smoke.yaml'"
)


def parameters_cell_source(step: str) -> str:
    """The source of ``step``'s parameters cell: per field its description as a comment, then ``name = default``
    (descriptions on their own line: papermill misreads an ``=`` inside a trailing comment)."""
    model = STEP_PARAMS[step]
    defaults = model().model_dump(mode="python")
    lines = []
    for name, field in model.model_fields.items():
        lines.append(f"# {field.description}")
        lines.append(f"{name} = {defaults[name]!r}")
    return CELL_HEADER + "\n".join(lines) + "\n" + CELL_FOOTER


def sync_parameters_cells(notebooks_dir: str | Path, check: bool = False) -> list[Path]:
    """Rewrite (or with ``check`` only list) the notebooks whose parameters cell differs from
    :func:`parameters_cell_source`. Returns the notebooks that differ(ed)."""
    import nbformat

    changed = []
    for step in STEP_PARAMS:
        path = Path(notebooks_dir) / f"{STEP_DIRS[step]}.ipynb"
        if not path.is_file():
            continue
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        if len(tagged) != 1:
            raise ValueError(f"{path}: needs exactly one cell tagged 'parameters', found {len(tagged)}")
        wanted = parameters_cell_source(step)
        if tagged[0].source != wanted:
            changed.append(path)
            if not check:
                tagged[0].source = wanted
                nbformat.write(nb, path)
    return changed
