"""Fault injection (issue 14): SIGKILL a run at seeded random points of annotate, cpt and merge (five kills), rerun
until it completes, and compare every artifact with an uninterrupted run of the same tiny profile.

Both runs share one 00_prepare (run once, its probes trimmed, the folder copied: a copied run folder is a valid
run). The runner and its
notebook kernel are both killed (a crash, not a polite stop). Deterministic steps must give byte-identical files;
the files that record wall-clock time are compared without their timing fields, and the reply cache (its lines
arrive in completion order) as a set of lines. The uninterrupted run also shows CPT's progress lines (issue 13.3).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medslm.params import load_profile
from medslm.plan import describe_changes
from medslm.rundir import RunDir, read_json, read_jsonl, sha256_file, verify_files, write_jsonl
from medslm.runner import run_profile

REPO = Path(__file__).resolve().parents[1]
TINY = """\
run: {{name: fault, output_dir: {out}, device: cpu}}
steps:
  prepare: {{n_documents: 400, pretrain_documents: 200, chat_examples: 100, vocab_size: 400, hidden_size: 32,
            num_layers: 1, num_heads: 2, intermediate_size: 64, block_size: 64, pretrain_epochs: 1, batch_size: 16}}
  annotate: {{sample_size: 200}}
  classify: {{min_per_class: 10}}
  cpt: {{epochs: 1, max_steps: 24, save_steps: 4, batch_size: 8, block_size: 64, eval_max_texts: 20, logging_steps: 2}}
  merge: {{sweep: [0.5]}}
"""
KILLS = ["annotate", "cpt", "cpt", "merge", "merge"]  # the step each of the five kills aims at
# JSON fields that record wall-clock time, or where a run resumed from (history, not outcome)
TIMING_KEYS = ("seconds", "_s", "per_s", "per_second", "runtime", "elapsed", "started", "ended", "updated",
               "resumed_from", "start_step")


def profile_for(folder: Path, out: Path) -> Path:
    """The tiny profile, writing to ``out``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(out=out))
    return path


def without_timings(value):
    """JSON data without fields that record wall-clock time (names ending in seconds, _s, per_s …)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not any(k.endswith(t) for t in TIMING_KEYS)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def fingerprint(path: Path):
    """What must be equal between the two runs: JSON without timing fields (timings.json: its field names), a reply
    cache as a set of lines, a model card as its sorted lines without the date, anything else (weights, data,
    figures) by sha256."""
    if path.name == "replies.jsonl":
        return sorted(set(path.read_text().splitlines()))
    if path.name == "timings.json":  # wall-clock times and free memory only: its fields must be the same
        return sorted(json.loads(path.read_text()))
    if path.suffix == ".json":
        return without_timings(json.loads(path.read_text()))
    if path.name == "README.md":  # model cards: the date they were written; mergekit's names its temp folder
        lines = path.read_text().splitlines()  # and lists the merged models in set order
        return sorted(re.sub(r"\.tmp-\d+", ".tmp", line) for line in lines if not line.startswith("| date |"))
    return sha256_file(path)


def children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (Linux /proc), the notebook kernel among them."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *children(kid)]
    return found


def status_of(manifest: Path) -> dict[str, str]:
    try:
        return {name: entry.get("status") for name, entry in read_json(manifest).get("steps", {}).items()}
    except (OSError, ValueError):
        return {}


def start(profile: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "medslm.cli", "run", str(profile)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def kill_during(proc: subprocess.Popen, manifest: Path, step: str, delay: float, order: list[str]) -> str | None:
    """SIGKILL the run and its kernel ``delay`` seconds after ``step`` (or a later step) starts running; returns
    the step that was running when it was killed (None when the run ended first)."""
    target = order.index(step)
    while proc.poll() is None:
        running = [s for s, st in status_of(manifest).items() if st == "running" and order.index(s) >= target]
        if running:
            time.sleep(delay)
            now = [s for s, st in status_of(manifest).items() if st == "running"]
            for pid in [*children(proc.pid), proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            return now[0] if now else None
        time.sleep(0.1)
    return None


def trim_probes(run: RunDir, per_group: int = 6) -> None:
    """Keep ``per_group`` probes per (kind, domain, language) and re-record 00_prepare's files in the manifest (as if
    prepare had written them): scoring all 1,258 toy-world probes five times per run would take minutes."""
    kept, seen = [], {}
    for rec in read_jsonl(run.prepare.probes):
        group = (rec["probe"], rec["domain"], rec["lang"])
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= per_group:
            kept.append(rec)
    write_jsonl(run.prepare.probes, kept)
    run.update_step("prepare", artifacts=run.collect_artifacts("prepare"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the kernel process through Linux /proc")
def test_sigkill_at_random_points_then_rerun_gives_the_uninterrupted_files(tmp_path):
    run_path, prepared = tmp_path / "run", tmp_path / "prepared"
    profile = profile_for(tmp_path / "params", run_path)
    run_profile(profile, steps=["prepare"], log=lambda line: None)
    trim_probes(RunDir(run_path))
    shutil.copytree(run_path, prepared)
    check_kills_then_rerun(tmp_path, profile, prepared)


def check_kills_then_rerun(tmp_path: Path, profile: Path, prepared: Path, seed: int = 14) -> None:
    """From a snapshot of the run folder where 00_prepare is done: an uninterrupted run, moved aside, then a run
    killed five times in the same folder (same paths, so files that name paths compare too), then every check."""
    rng = random.Random(seed)
    run_path, reference = load_profile(profile).run_dir(), tmp_path / "reference"
    shutil.rmtree(run_path, ignore_errors=True)
    shutil.copytree(prepared, run_path)
    lines: list[str] = []
    run_profile(profile, log=lines.append)
    # 13.3: the CPT step's training progress reached the terminal while it ran
    assert any(line.startswith("    cpt: train: step ") and "loss" in line for line in lines), lines
    run_path.rename(reference)
    shutil.copytree(prepared, run_path)

    ref_steps = RunDir(reference).read_manifest()["steps"]
    order, seconds = list(ref_steps), {name: entry["seconds"] for name, entry in ref_steps.items()}
    log, manifest = tmp_path / "crashed.log", run_path / "manifest.json"
    killed_in = []
    for step in KILLS:
        proc = start(profile, log)
        killed_in.append(kill_during(proc, manifest, step, rng.uniform(0.1, 0.9) * seconds[step], order))
    for _ in range(3):  # reruns until it completes (a finished run exits 0)
        if start(profile, log).wait() == 0:
            break
    text = log.read_text()
    assert text.count("taking over the lock of a run that ended without releasing it") >= 4, text
    assert {"annotate", "cpt", "merge"} <= set(killed_in), killed_in  # kills landed inside those steps

    # the manifest is consistent: every step done, every recorded file on disk as recorded, nothing unrecorded
    run = RunDir(run_path)
    steps = run.read_manifest()["steps"]
    assert {s: e["status"] for s, e in steps.items()} == dict.fromkeys(order, "done")
    for name, entry in steps.items():
        changes = verify_files(run.path, entry["artifacts"], run.step(name).path)
        assert not changes, f"{name}: {describe_changes(changes)}"
    assert not (run_path / ".medslm-lock.json").exists()

    # every artifact equals the uninterrupted run's
    for name in order:
        ref_paths = [a["path"] for a in ref_steps[name]["artifacts"]]
        assert [a["path"] for a in steps[name]["artifacts"]] == ref_paths, name
        different = [p for p in ref_paths if fingerprint(reference / p) != fingerprint(run_path / p)]
        assert not different, f"{name}: {different} differ from the uninterrupted run (killed in {killed_in})"
