"""Run a profile: validate it, then execute each step's notebook with papermill, skipping unchanged steps.

A step is skipped when the manifest says it is done with the same *fingerprint* — a hash of the run parameters,
the step's parameters, the notebook file, the files it reads outside the run (local corpora, model folders) and
the artifacts of the steps before it — and its own artifacts are unchanged on disk. What a skip depends on is
checked against the files (size and mtime, sha256 when those changed; see :mod:`medslm.plan`), not taken from
the manifest. A step whose upstream step failed, is missing or changed since it finished is refused, naming the
step to run. ``force`` runs every step anyway (and writes into a non-empty folder that is not a run).
The run folder is locked while a run uses it; long steps show progress lines (:mod:`medslm.progress`).
"""

from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medslm.cpu_kernels import kernel_variables
from medslm.params import STEP_DIRS, Profile, ProfileError, load_profile
from medslm.plan import StepPlan, UpstreamNotReady, plan_step
from medslm.progress import follow
from medslm.report import write_report
from medslm.resources import notebooks_dir as find_notebooks_dir
from medslm.rundir import RunDir, now_iso, package_versions

NOTEBOOKS_DIR = find_notebooks_dir()  # the checkout's notebooks/, else those shipped in the package
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colour and cursor codes of IPython tracebacks


class StepFailed(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the executed copy."""


class RunInterrupted(RuntimeError):
    """The user interrupted the run (Ctrl-C); the step is marked ``interrupted`` in the manifest."""


__all__ = ["RunInterrupted", "StepFailed", "UpstreamNotReady", "run_profile", "select_steps"]


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




TRACEBACK_LAST_LINE = re.compile(r"^(?P<ename>[A-Za-z_][\w.]*): (?P<evalue>.*)$")


def cell_error(executed: Path) -> tuple[str, str]:
    """``(ename, evalue)`` of the failed cell of an executed notebook (papermill marks it ``status: failed``).

    IPython sometimes cannot render a traceback (an exception re-raised from a worker thread, as the LLM client
    does) and prints it on the cell's stderr instead; papermill then reports ``CellExecutionError`` with an empty
    message. The exception's own line is then the last line of that printed traceback."""
    import nbformat

    try:
        cells = nbformat.read(executed, as_version=4).cells
    except (OSError, ValueError):
        return "", ""
    failed = [c for c in cells if c.get("metadata", {}).get("papermill", {}).get("status") == "failed"]
    for out in reversed(failed[-1].get("outputs", []) if failed else []):
        if out.get("output_type") == "error" and out.get("evalue"):
            return out["ename"], out["evalue"]
        if out.get("output_type") == "stream" and "Traceback (most recent call last)" in out.get("text", ""):
            lines = [line for line in strip_ansi(out["text"]).splitlines() if line.strip()]
            match = TRACEBACK_LAST_LINE.match(lines[-1]) if lines else None
            if match:
                return match["ename"].rsplit(".", 1)[-1], match["evalue"]
    return "", ""


def failure_message(step: str, notebook: Path, output: Path, err: Exception) -> str:
    """What failed: the notebook, the cell (index and first line), the exception's own message, the last traceback
    lines and the executed copy."""
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        ename, evalue = err.ename, err.evalue
        if not evalue:
            ename, evalue = cell_error(output)
            ename, evalue = (ename, evalue) if evalue else (err.ename, "(no message; see the executed notebook)")
        tb = "\n".join(err.traceback[-12:]) if err.traceback else ""
        source = [line for line in (err.source or "").splitlines() if line.strip() and not line.startswith("#")]
        where = f"cell {err.cell_index} (execution count {err.exec_count})" + (f": {source[0].strip()}" if source else "")
        return strip_ansi(f"step {step!r} failed in {notebook.name}, {where}\n{ename}: {evalue}\n"
                          + (f"{tb}\n" if tb else "") + f"executed notebook: {output}")
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
    """Run the profile's steps; return the run directory.

    Raises ProfileError (bad profile), RunDirError (output_dir is someone else's folder or in use), UpstreamNotReady,
    StepFailed or RunInterrupted. ``force`` runs unchanged steps too and writes into a non-empty folder that is not
    a run."""
    from accelerate.utils import patch_environment

    profile, notebooks_dir = load_profile(profile_path), Path(notebooks_dir)
    names = select_steps(profile, steps, from_step)
    for name in names:
        if not notebook_path(name, notebooks_dir).is_file():
            raise ProfileError([f"step {name!r} has no notebook at {notebook_path(name, notebooks_dir)}"])
    run = RunDir(profile.run_dir())
    run.check_ownership(force)
    with run.lock(profile=str(profile.path)) as stale:
        if stale:
            log(f"taking over the lock of a run that ended without releasing it (pid {stale.get('pid')} on "
                f"{stale.get('host')}, started {stale.get('started')})")
        mark_abandoned_steps(run)
        run.set_run_info(run=profile.run.model_dump(mode="json"), profile=str(profile.path),
                         packages=package_versions())
        verified: set[str] = set()
        command = f"medslm run {profile_path}"
        with patch_environment(**kernel_variables(profile.run.cpu_kernels)):  # the kernels inherit these
            for i, name in enumerate(names, start=1):
                notebook = notebook_path(name, notebooks_dir)
                plan = plan_step(run, profile, name, notebook, verified, force=force, command=command)
                prefix = f"[{i}/{len(names)}] {name}"
                if plan.reason is None:
                    log(f"{prefix}: unchanged, skipped (use --force to run it again)")
                    continue
                execute_step(run, profile, plan, notebook, notebooks_dir, prefix, log, execution_timeout)
                verified.add(name)
        write_report(run.path)  # <run>/report.html: one page for every step done so far
    return run.path


def mark_abandoned_steps(run: RunDir) -> None:
    """Mark steps a killed run left ``running`` as ``interrupted`` (called while holding the run's lock, so no
    other run is executing them)."""
    def change(manifest: dict[str, Any]) -> None:
        for entry in manifest.get("steps", {}).values():
            if entry.get("status") == "running":
                entry.update(status="interrupted", error="the run executing this step ended without finishing it "
                                                         "(killed?)")
    if run.manifest_path.exists():
        run.update_manifest(change)


def execute_step(run: RunDir, profile: Profile, plan: StepPlan, notebook: Path, notebooks_dir: Path, prefix: str,
                 log: Callable[[str], None], execution_timeout: int | None) -> None:
    """Execute one step's notebook with papermill and record the outcome in the manifest (done with its artifacts,
    failed with the error, or interrupted); show its progress lines while it runs."""
    import papermill as pm

    name = plan.name
    output = run.notebooks / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    params = profile.steps[name].model_dump(mode="json")
    log(f"{prefix}: running {notebook.name} ({plan.reason}) …")
    start = time.perf_counter()
    run.update_step(name, status="running", started=now_iso(), ended=None, error=None, seconds=None,
                    params_hash=profile.steps[name].params_hash(), params=params, fingerprint=None, artifacts=[],
                    notebook=str(output.relative_to(run.path)))
    try:
        with follow(run.path / ".progress" / f"{name}.log", log, prefix=f"    {name}: "):
            pm.execute_notebook(
                str(notebook), str(output), parameters={**params, "run_dir": str(run.path), "profile": str(profile.path)},
                kernel_name="python3", language="python", cwd=str(notebooks_dir), progress_bar=False,
                log_output=False, execution_timeout=execution_timeout, config=kernel_config(),
                shutdown_kernel="immediate",  # the notebook is done (or Ctrl-C): stop the kernel, no shutdown chatter
            )
    except KeyboardInterrupt:
        interrupted(run, name, start)
    except Exception as err:  # papermill/nbclient errors and anything else the kernel raised
        if getattr(err, "ename", None) == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
            return interrupted(run, name, start)
        message = failure_message(name, notebook, output, err)
        run.update_step(name, status="failed", ended=now_iso(), seconds=round(time.perf_counter() - start, 2),
                        error=message if not isinstance(err, OSError) else message + "\n" + traceback.format_exc())
        raise StepFailed(message) from err
    seconds = round(time.perf_counter() - start, 2)
    run.update_step(name, status="done", ended=now_iso(), seconds=seconds, fingerprint=plan.fingerprint,
                    fingerprint_parts=plan.parts, inputs=plan.inputs, artifacts=run.collect_artifacts(name),
                    upstream=plan.upstream)
    log(f"{prefix}: done in {seconds:.1f} s")


def interrupted(run: RunDir, name: str, start: float) -> None:
    """Mark ``name`` interrupted in the manifest and raise :class:`RunInterrupted` (one line, no traceback)."""
    run.update_step(name, status="interrupted", ended=now_iso(), seconds=round(time.perf_counter() - start, 2),
                    error="interrupted by the user (Ctrl-C)")
    raise RunInterrupted(f"interrupted during step {name!r}; the manifest marks it interrupted. Run the same "
                         "command again to continue (finished steps are skipped)") from None
