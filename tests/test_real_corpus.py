"""A real-format corpus end to end (issue 13): plain JSONL documents (``id``, ``text``; no label, no toy-world probes)
through 00→04 with ``medslm run``. Without probes, 03_cpt measures perplexity on held-out medical text (filtered
documents) and general text (rejected documents) before and after training, 04_merge measures both at every sweep
point, and the merge is selected by the perplexity rule, not by the fallback.

The base model is a tiny Llama pretrained here on the toy world's general documents only (00_prepare's own
pretraining function, cut to seconds), so continual pre-training on medical text has general knowledge to lose.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medslm.rundir import RunDir, read_json, read_jsonl, write_jsonl

MEDSLM = str(Path(sys.executable).with_name("medslm"))
SWEEP = [0.3, 0.5, 0.7]


def pretrained_base(folder: Path) -> tuple[Path, list[dict]]:
    """A tiny Llama pretrained on general documents, and the world's web corpus as plain ``id``/``text`` records."""
    import torch

    from medslm.models import save_model
    from medslm.params import PrepareParams
    from medslm.toyworld import build

    params = PrepareParams(n_documents=400, pretrain_documents=300, chat_examples=50, vocab_size=400, hidden_size=32,
                           num_layers=1, num_heads=2, intermediate_size=64, pretrain_epochs=3.0, block_size=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        world = build.make_world_data(params, seed=0)
        tokenizer = build.train_world_tokenizer(world, params.vocab_size)
        model, _, _ = build.pretrain_tiny_model(params, world, tokenizer, device="cpu")
    finally:
        torch.set_num_threads(threads)
    save_model(model, tokenizer, folder)
    return folder, [{"id": f"doc-{i}", "text": doc["text"]} for i, doc in enumerate(world.corpus)]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> RunDir:
    tmp = tmp_path_factory.mktemp("real")
    base, corpus = pretrained_base(tmp / "base")
    write_jsonl(tmp / "corpus.jsonl", corpus)
    profile = {
        "run": {"name": "real-format", "output_dir": "run", "device": "cpu"},
        "steps": {
            "prepare": {"source": "local", "local_files": ["corpus.jsonl"], "base_model": "base"},
            "annotate": {"sample_size": 300},
            "classify": {},
            "cpt": {"mode": "full", "replay_fraction": 0.0, "learning_rate": 0.01, "block_size": 64, "batch_size": 8,
                    "epochs": 3.0, "eval_max_texts": 24, "save_steps": 0, "resume": False},
            "merge": {"sweep": SWEEP, "eval_max_texts": 24},
        },
    }
    path = tmp / "real.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([MEDSLM, "run", str(path)], cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return RunDir(tmp / "run")


@pytest.mark.slow
def test_the_corpus_has_no_labels_and_the_run_no_probes(real_run):
    corpus = read_jsonl(real_run.prepare.corpus)
    assert corpus and not any("label" in doc or "kind" in doc for doc in corpus)
    assert not real_run.prepare.probes.is_file()
    manifest = read_json(real_run.manifest_path)
    assert [s for s, e in manifest["steps"].items() if e["status"] == "done"] == ["prepare", "annotate", "classify",
                                                                                   "cpt", "merge"]


@pytest.mark.slow
def test_cpt_measures_medical_and_general_perplexity_before_and_after(real_run):
    cpt = read_json(real_run.cpt.metrics)
    for when in ("before", "after"):
        assert "probes" not in cpt[when]
        assert set(cpt[when]["perplexity"]) == {"corpus_heldout", "general_heldout"}
    assert cpt["after"]["perplexity"]["corpus_heldout"] < cpt["before"]["perplexity"]["corpus_heldout"]  # learnt
    assert cpt["forgetting"]["general_heldout_perplexity_ratio"] == pytest.approx(
        cpt["after"]["perplexity"]["general_heldout"] / cpt["before"]["perplexity"]["general_heldout"])
    assert len(read_jsonl(real_run.cpt.heldout_medical)) > 0 and len(read_jsonl(real_run.cpt.heldout_general)) > 0


@pytest.mark.slow
def test_merge_selects_by_the_perplexity_rule(real_run):
    selection = read_json(real_run.merge.selected / "selection.json")
    assert selection["fallback"] is False, selection["note"]
    assert selection["rule"].startswith("minimize ppl_medical over the merges")
    assert sorted(c["t"] for c in selection["candidates"]) == SWEEP
    scores = {c["t"]: c for c in selection["candidates"]}
    assert all(c["ppl_medical"] > 0 and c["ppl_general"] > 0 for c in scores.values())  # measured at each point
    reference, limit = selection["reference"]["scores"], selection["thresholds"]["ppl_general"]
    assert limit == pytest.approx(reference["ppl_general"] * selection["constraints"]["ppl_general"])
    # the rule, recomputed here: among merges that passed the sanity check, general perplexity within the limit and
    # below CPT's; then the lowest medical one
    merge = read_json(real_run.merge.metrics)
    cpt_general = next(row for row in merge["sweep"] if row["t"] == 1.0 and not row["merged"])["scores"]["ppl_general"]
    qualified = [t for t, c in scores.items()
                 if c["sanity_ok"] and c["ppl_general"] <= limit and c["ppl_general"] < cpt_general]
    assert qualified and sorted(selection["qualified"]) == sorted(qualified)
    best = min(qualified, key=lambda t: scores[t]["ppl_medical"])
    assert selection["selected"]["t"] == best


@pytest.mark.slow
def test_merge_measures_every_point_on_the_texts_cpt_measured(real_run):
    merge, cpt = read_json(real_run.merge.metrics), read_json(real_run.cpt.metrics)
    assert merge["evaluation"]["scored_by"] == "perplexity"
    points = {(row["label"], row["t"]): row["scores"] for row in merge["sweep"]}
    assert sorted(t for label, t in points if label == "merge") == SWEEP
    assert all(set(scores) == {"ppl_medical", "ppl_general"} for scores in points.values())
    # the parents' scores agree with 03_cpt's own before/after measurement on the same held-out files
    for label, t, when in (("instruct", 0.0, "before"), ("cpt", 1.0, "after")):
        assert points[(label, t)]["ppl_medical"] == pytest.approx(cpt[when]["perplexity"]["corpus_heldout"], rel=1e-3)
        assert points[(label, t)]["ppl_general"] == pytest.approx(cpt[when]["perplexity"]["general_heldout"], rel=1e-3)
