"""Time the 00_prepare step of the smoke profile end to end (papermill, kernel start included).

Prints one JSON line per figure. Run: `make bench` or `python bench/prepare_time.py [PROFILE]`.
Target (issue 2): the whole prepare step ≤ 150 s on 2 cores; a second run skips it in < 20 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "params" / "smoke.yaml"
    profile = yaml.safe_load(source.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        profile["run"]["output_dir"] = str(Path(tmp) / "run")
        path = Path(tmp) / "profile.yaml"
        path.write_text(yaml.safe_dump(profile))
        cli = [str(Path(sys.executable).with_name("medslm")), "run", str(path), "--steps", "prepare"]
        t0 = time.perf_counter()
        subprocess.run(cli, check=True, cwd=REPO)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(cli, check=True, cwd=REPO)
        second = time.perf_counter() - t0
        run = Path(tmp) / "run"
        timings = json.loads((run / "00_prepare" / "timings.json").read_text())
        metrics = json.loads((run / "00_prepare" / "metrics.json").read_text())
    print(json.dumps({"figure": "prepare_step_seconds", "value": round(first, 1), "target_max": 150}))
    print(json.dumps({"figure": "second_run_seconds", "value": round(second, 1), "target_max": 20}))
    print(json.dumps({"figure": "prepare_parts_seconds", **{k: round(v, 1) for k, v in timings.items()}}))
    print(json.dumps({"figure": "probe_accuracy", **{g: metrics["probes"][g] for g in ("general", "chat", "medical")}}))


if __name__ == "__main__":
    main()
