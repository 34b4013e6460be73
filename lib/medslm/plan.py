"""Whether a step must run again, decided from the files it reads and writes (not from what the manifest says).

A step's *fingerprint* hashes what it depends on: the run parameters (not its name or folder), its own parameters,
its notebook, the medslm library the notebook calls (its source and data files, wherever it is installed), the files
it reads outside the run folder (local corpora, gold files, local model folders) and the recorded artifacts of the
steps before it. A step is skipped only when its manifest entry is ``done`` with the same fingerprint and its
folder still holds exactly the recorded files. Files are compared by size and mtime first and hashed (sha256)
only when those changed, so a check over a large model folder costs a few ``stat`` calls.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from medslm.params import MODEL_FIELDS, PATH_FIELDS, Profile
from medslm.rundir import FileChange, RunDir, sha256_file, visible_files

# Run fields that do not change what a step writes: a copied or renamed run folder is reused, not run again.
RUN_FIELDS_WITHOUT_EFFECT = {"name", "output_dir"}
PACKAGE_DIR = Path(__file__).resolve().parent  # the installed medslm package


class UpstreamNotReady(RuntimeError):
    """A step reads the files of an earlier step that failed, never ran, or changed since it finished."""


@dataclass
class StepPlan:
    """What a step depends on and why it runs (``reason`` None: it is unchanged and skipped)."""

    name: str
    fingerprint: str
    parts: dict[str, Any]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    upstream: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


def external_inputs(profile: Profile, step: str) -> list[Path]:
    """Files outside the run folder that ``step`` reads: its path fields and local model folders (hub ids and
    paths that do not exist are left out; validation reports the latter)."""
    params = profile.steps[step]
    names = PATH_FIELDS.get(step, ()) + MODEL_FIELDS.get(step, ()) + (("model",) if step == "annotate" else ())
    files: list[Path] = []
    for name in names:
        value = getattr(params, name, None)
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or not Path(item).is_absolute():
                continue
            path = Path(item)
            files += [path] if path.is_file() else visible_files(path)
    return files


def input_records(files: list[Path], previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{path, bytes, mtime_ns, sha256}`` per file; the sha256 of a previous record with the same path, size and
    mtime is reused instead of reading the file again."""
    known = {rec["path"]: rec for rec in previous}
    records = []
    for path in files:
        stat = path.stat()
        old = known.get(str(path))
        same = old is not None and old["bytes"] == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns
        records.append({"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                        "sha256": old["sha256"] if same else sha256_file(path)})
    return records


def artifact_digest(entry: dict[str, Any]) -> str:
    """A short hash of a step's recorded artifacts (paths and sha256)."""
    blob = json.dumps([(a["path"], a["sha256"]) for a in entry.get("artifacts", [])])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _short(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def upstream_digests(run: RunDir, profile: Profile, step: str, verified: set[str], command: str) -> dict[str, str]:
    """The artifact digest of every step before ``step`` in the profile. Steps not in ``verified`` (not run or
    checked in this invocation) are checked against their files. Raises :class:`UpstreamNotReady` naming the step to
    run when one failed, never ran or changed."""
    names = profile.step_names()
    steps = run.read_manifest().get("steps", {})
    digests = {}
    for before in names[: names.index(step)]:
        entry = steps.get(before, {})
        status = entry.get("status")
        problem = None
        if status != "done":
            problem = {None: "has not run in this run folder", "failed": "failed in its last run",
                       "interrupted": "was interrupted", "running": "was interrupted"}.get(status, f"is {status}")
        elif before not in verified:
            changes = run.artifact_changes(before, entry)
            if changes:
                problem = f"changed since it finished: {describe_changes(changes)}"
        if problem:
            raise UpstreamNotReady(f"step {step!r} reads what step {before!r} writes, but {before!r} {problem}; run it "
                                   f"first: {command} --from {before}")
        verified.add(before)
        digests[before] = artifact_digest(entry)
    return digests


def describe_changes(changes: list[FileChange], shown: int = 3) -> str:
    """``a changed (sha256 differs); b was deleted and 2 more``."""
    text = "; ".join(str(c) for c in changes[:shown])
    return text + (f" and {len(changes) - shown} more" if len(changes) > shown else "")


@cache
def library_digest(package: Path = PACKAGE_DIR) -> str:
    """A hash of the medslm package's own files (code, templates, toy-world data) where it is installed, read once
    per process: an edited library function changes what every notebook computes, so the steps run again, as they do
    after an edited notebook."""
    files = [p for p in visible_files(package) if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return _short([(p.relative_to(package).as_posix(), sha256_file(p)) for p in files])


def plan_step(run: RunDir, profile: Profile, step: str, notebook: Path, verified: set[str], force: bool = False,
              command: str = "medslm run") -> StepPlan:
    """Decide whether ``step`` runs, and why (see the module docstring). Adds ``step`` to ``verified`` when it is
    skipped (its files were checked)."""
    entry = run.read_manifest().get("steps", {}).get(step, {})
    upstream = upstream_digests(run, profile, step, verified, command)
    inputs = input_records(external_inputs(profile, step), entry.get("inputs", []))
    parts = {"run": _short(profile.run.model_dump(mode="json", exclude=RUN_FIELDS_WITHOUT_EFFECT)),
             "params": profile.steps[step].params_hash(),
             "notebook": sha256_file(notebook), "library": library_digest(), "inputs": _short([(i["path"], i["sha256"]) for i in inputs]),
             "upstream": upstream}
    fingerprint = _short(parts)
    plan = StepPlan(step, fingerprint, parts, inputs, upstream)
    status = entry.get("status")
    if force:
        plan.reason = "--force"
    elif not entry:
        plan.reason = "first run"
    elif status != "done":
        plan.reason = f"its last run {'was interrupted' if status == 'running' else status}"
    elif entry.get("fingerprint") != fingerprint:
        plan.reason = f"changed since its last run: {_changed_parts(entry.get('fingerprint_parts', {}), parts)}"
    else:
        changes = run.artifact_changes(step, entry)
        if changes:
            plan.reason = f"its files changed since it finished: {describe_changes(changes)}"
        else:
            verified.add(step)
    return plan


def _changed_parts(old: dict[str, Any], new: dict[str, Any]) -> str:
    names = {"run": "run parameters", "params": "step parameters", "notebook": "notebook",
             "library": "medslm library", "inputs": "input files"}
    changed = [label for key, label in names.items() if old.get(key) != new.get(key)]
    old_up, new_up = old.get("upstream", {}), new.get("upstream", {})
    moved = [s for s in new_up if old_up.get(s) != new_up[s]]
    if moved:
        changed.append(f"output of {', '.join(moved)}")
    return ", ".join(changed) or "its dependencies"
