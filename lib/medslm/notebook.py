"""What every notebook does first and last: validate its parameters, find the run, write metrics.

In a notebook::

    ctx = start_step("prepare", globals())   # validates the parameters cell, seeds, creates <run>/00_prepare/
    params, run = ctx.params, ctx.rundir
    ...
    finish_step(ctx, metrics)                # writes <run>/00_prepare/metrics.json

Each notebook's cell tagged ``parameters`` is *generated* from the step's pydantic model
(:func:`parameters_cell_source`; ``medslm cells`` rewrites them), so a default is stated once, in
:mod:`medslm.params`. The cell tagged ``install`` (Colab/Kaggle) is generated too, from :data:`INSTALL_CELL`, so every
notebook installs medslm the same way.
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


# The first code cell of every notebook. It never names a URL: the user sets MEDSLM_SOURCE (default: the checkout
# the notebook sits in); torch is pinned to the importable version (-c), so pip never replaces Colab's CUDA torch.
INSTALL_CELL = """\
# Colab / Kaggle: install medslm when this kernel cannot import it (a no-op in the project's environment).
# MEDSLM_SOURCE: a folder holding medslm's pyproject.toml (default: the checkout this notebook sits in), a wheel
# file, or the git URL of your copy of the project ("git+https://..."); set it when the notebook stands alone.
MEDSLM_SOURCE = ".."
import importlib.util
import tempfile
from importlib.metadata import version
from pathlib import Path

if importlib.util.find_spec("medslm") is None:
    if MEDSLM_SOURCE == ".." and not Path("../pyproject.toml").is_file():
        raise RuntimeError("medslm is not installed and this notebook is not in a checkout: set MEDSLM_SOURCE")
    keep = Path(tempfile.gettempdir()) / "medslm-keep-torch.txt"  # an importable (CUDA) torch stays as it is
    keep.write_text(f"torch=={version('torch')}\\n" if importlib.util.find_spec("torch") else "")
    %pip install -q "{MEDSLM_SOURCE}" -c {keep}"""


def install_cell_source() -> str:
    """The source of every notebook's cell tagged ``install`` (:data:`INSTALL_CELL`)."""
    return INSTALL_CELL


def _sync_tagged_cell(path: Path, tag: str, wanted: str, check: bool) -> bool:
    """Whether the one cell tagged ``tag`` in ``path`` differs from ``wanted``; rewritten unless ``check``."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{path}: needs exactly one cell tagged {tag!r}, found {len(tagged)}")
    if tagged[0].source == wanted:
        return False
    if not check:
        tagged[0].source = wanted
        nbformat.write(nb, path)
    return True


def _step_notebooks(notebooks_dir: str | Path) -> dict[str, Path]:
    paths = {step: Path(notebooks_dir) / f"{STEP_DIRS[step]}.ipynb" for step in STEP_PARAMS}
    return {step: path for step, path in paths.items() if path.is_file()}


def sync_parameters_cells(notebooks_dir: str | Path, check: bool = False) -> list[Path]:
    """Rewrite (or with ``check`` only list) the notebooks whose parameters cell differs from
    :func:`parameters_cell_source`. Returns the notebooks that differ(ed)."""
    return [path for step, path in _step_notebooks(notebooks_dir).items()
            if _sync_tagged_cell(path, "parameters", parameters_cell_source(step), check)]


def sync_install_cells(notebooks_dir: str | Path, check: bool = False) -> list[Path]:
    """Rewrite (or with ``check`` only list) the notebooks whose cell tagged ``install`` differs from
    :func:`install_cell_source`. Returns the notebooks that differ(ed)."""
    return [path for path in _step_notebooks(notebooks_dir).values()
            if _sync_tagged_cell(path, "install", install_cell_source(), check)]
