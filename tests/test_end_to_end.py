"""End to end: `medslm run` on the smoke profile (the toy world), exactly as `make run` does it.

One run is shared by the tests of this file (it takes a few minutes on 2 cores); the acceptance figures of the
toy world are asserted on it.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medslm.rundir import RunDir, read_json, read_jsonl

REPO = Path(__file__).resolve().parents[1]
MEDSLM = str(Path(sys.executable).with_name("medslm"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([MEDSLM, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    profile = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    profile["run"]["output_dir"] = str(tmp / "run")
    path = tmp / "smoke.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    t0 = time.perf_counter()
    proc = run_cli("run", str(path))
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"profile": path, "run": RunDir(tmp / "run"), "seconds": seconds, "stdout": proc.stdout,
            "steps": list(profile["steps"])}


@pytest.mark.slow
def test_every_step_done_with_artifacts(smoke):
    rd = smoke["run"]
    manifest = read_json(rd.manifest_path)
    for step in smoke["steps"]:
        entry = manifest["steps"][step]
        assert entry["status"] == "done", (step, entry.get("error"))
        assert entry["artifacts"], step
        assert (rd.path / entry["notebook"]).exists()
        assert f"{step}: done in" in smoke["stdout"]
    assert manifest["packages"]["transformers"]


@pytest.mark.slow
def test_prepare_outputs_load(smoke):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = smoke["run"].prepare
    corpus = read_jsonl(d.corpus, required=("id", "text", "lang", "kind", "label"))
    assert len(corpus) == 3000
    assert read_jsonl(d.probes) and read_jsonl(d.chat) and read_jsonl(d.heldout)
    model = AutoModelForCausalLM.from_pretrained(d.model)
    tok = AutoTokenizer.from_pretrained(d.model)
    assert model.config.vocab_size == len(tok) and tok.chat_template
    assert read_json(d.base_model)["ref"] == str(d.model)
    for fig in ("corpus", "pretrain_loss", "probes"):
        assert d.figure(fig).stat().st_size > 1000


@pytest.mark.slow
def test_tiny_general_model_acceptance(smoke):
    probes = read_json(smoke["run"].prepare.metrics)["probes"]
    assert probes["general"] >= 0.80, probes
    assert probes["chat"] >= 0.70, probes
    assert probes["medical"] <= 0.45, probes


@pytest.mark.slow
def test_same_seed_gives_the_same_corpus(smoke):
    from medslm.params import PrepareParams
    from medslm.toyworld.build import make_world_data

    data = make_world_data(PrepareParams(), seed=0)
    lines = [json.dumps(d, ensure_ascii=False) + "\n" for d in data.corpus]
    assert "".join(lines).encode() == smoke["run"].prepare.corpus.read_bytes()
    other = make_world_data(PrepareParams(), seed=1)
    assert [d["text"] for d in other.corpus] != [d["text"] for d in data.corpus]


@pytest.mark.slow
def test_second_run_skips_everything_quickly(smoke):
    t0 = time.perf_counter()
    proc = run_cli("run", str(smoke["profile"]))
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("unchanged, skipped") == len(smoke["steps"])
    assert seconds < 20, seconds
