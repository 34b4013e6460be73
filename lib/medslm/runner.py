"""Run a profile: validate it, then execute each step's notebook with papermill, skipping unchanged steps.

A step is skipped when the manifest says it is done with the same *fingerprint* — a hash of the run parameters,
the step's parameters, the notebook file and the artifacts of the steps before it — and its artifacts are still
there. ``force`` runs it anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medslm.params import STEP_DIRS, Profile, ProfileError, load_profile
from medslm.report import write_report
from medslm.resources import notebooks_dir as find_notebooks_dir
from medslm.rundir import RunDir, now_iso, package_versions, sha256_file

NOTEBOOKS_DIR = find_notebooks_dir()  # the checkout's notebooks/, else those shipped in the package
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colour and cursor codes of IPython tracebacks


class StepFailed(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the executed copy."""


@dataclass
class StepPlan:
    name: str
    notebook: Path
    output: Path
    parameters: dict
    fingerprint: str


def notebook_path(step: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    return notebooks_dir / f"{STEP_DIRS[step]}.ipynb"


def select_steps(profile: Profile, steps: list[str] | None = None, from_step: str | None = None) -> list[str]:
    """The profile's steps to run, in recipe order, narrowed by ``steps`` and/or ``from_step``."""
    names = profile.step_names()
    for wanted in (steps or []) + ([from_step] if from_step else []):
        if wanted not in names:
            raise ProfileError([f"{profile.path}: step {wanted!r} is not in this profile; its steps: {', '.join(names)}"])
    if from_step:
        names = names[names.index(from_step):]
    if steps:
        names = [n for n in names if n in steps]
    return names


def _fingerprint(profile: Profile, step: str, notebook: Path, upstream: dict[str, str]) -> str:
    blob = json.dumps(
        {
            "run": profile.run.params_hash(),
            "params": profile.steps[step].params_hash(),
            "notebook": sha256_file(notebook),
            "upstream": upstream,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _artifact_digest(entry: dict) -> str:
    blob = json.dumps([(a["path"], a["sha256"]) for a in entry.get("artifacts", [])])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape codes (IPython colours its tracebacks; a terminal log should not show them)."""
    return ANSI_ESCAPE.sub("", text)


def kernel_config() -> Any:
    """traitlets config for the kernel papermill starts: IPC (Unix-socket) transport on POSIX.

    ipykernel warns "Kernel is running over TCP without encryption" on its stderr — which is the terminal's — for
    every kernel started over TCP (the default), so ``medslm run`` printed it once per step. The kernel always runs
    on this machine, so Unix sockets (file permissions instead of open ports) are the better transport and the
    warning's own advice. Windows keeps TCP.
    """
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc"}}) if os.name == "posix" else Config()


def _failure_message(step: str, notebook: Path, output: Path, err: Exception) -> str:
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        tb = "\n".join(err.traceback[-12:]) if err.traceback else ""
        return strip_ansi(
            f"step {step!r} failed in {notebook.name}, cell {err.cell_index} (execution count {err.exec_count}):\n"
            f"{err.ename}: {err.evalue}\n{tb}\nexecuted notebook: {output}"
        )
    if isinstance(err, CellTimeoutError):
        return f"step {step!r} timed out in {notebook.name}: {err}\nexecuted notebook: {output}"
    return strip_ansi(f"step {step!r} failed in {notebook.name}: {type(err).__name__}: {err}\nexecuted notebook: {output}")


def run_profile(
    profile_path: str | Path,
    steps: list[str] | None = None,
    from_step: str | None = None,
    force: bool = False,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    log: Callable[[str], None] = print,
    execution_timeout: int | None = None,
) -> Path:
    """Run the profile's steps; return the run directory. Raises ProfileError or StepFailed."""
    profile = load_profile(profile_path)
    names = select_steps(profile, steps, from_step)
    for name in names:
        if not notebook_path(name, notebooks_dir).is_file():
            raise ProfileError([f"step {name!r} has no notebook at {notebook_path(name, notebooks_dir)}"])
    rd = RunDir(profile.run_dir())
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.set_run_info(run=profile.run.model_dump(mode="json"), profile=str(profile.path), packages=package_versions())

    import papermill as pm

    all_steps = profile.step_names()
    for i, name in enumerate(names, start=1):
        manifest = rd.read_manifest()
        done = manifest.get("steps", {})
        upstream = {s: _artifact_digest(done.get(s, {})) for s in all_steps[: all_steps.index(name)]}
        nb = notebook_path(name, notebooks_dir)
        fp = _fingerprint(profile, name, nb, upstream)
        entry = done.get(name, {})
        prefix = f"[{i}/{len(names)}] {name}"
        if not force and entry.get("status") == "done" and entry.get("fingerprint") == fp and rd.artifacts_intact(entry):
            log(f"{prefix}: unchanged, skipped (use --force to run it again)")
            continue
        output = rd.notebooks / nb.name
        output.parent.mkdir(parents=True, exist_ok=True)
        params = profile.steps[name].model_dump(mode="json")
        parameters = {**params, "run_dir": str(rd.path), "profile": str(profile.path)}
        log(f"{prefix}: running {nb.name} …")
        start = time.perf_counter()
        rd.update_step(name, status="running", started=now_iso(), ended=None, error=None,
                       params_hash=profile.steps[name].params_hash(), params=params, fingerprint=None,
                       notebook=str(output.relative_to(rd.path)))
        try:
            pm.execute_notebook(
                str(nb), str(output), parameters=parameters, kernel_name="python3", language="python",
                cwd=str(notebooks_dir), progress_bar=False, log_output=False, execution_timeout=execution_timeout,
                config=kernel_config(),
            )
        except Exception as err:  # papermill/nbclient errors and anything else the kernel raised
            message = _failure_message(name, nb, output, err)
            rd.update_step(name, status="failed", ended=now_iso(), seconds=round(time.perf_counter() - start, 2),
                           error=message if not isinstance(err, OSError) else message + "\n" + traceback.format_exc())
            raise StepFailed(message) from err
        seconds = round(time.perf_counter() - start, 2)
        rd.update_step(name, status="done", ended=now_iso(), seconds=seconds, fingerprint=fp,
                       artifacts=rd.collect_artifacts(name), upstream=upstream)
        log(f"{prefix}: done in {seconds:.1f} s")
    write_report(rd.path)  # <run>/report.html: the page of every step done so far
    return rd.path
