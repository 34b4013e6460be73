"""00_prepare's library: the toy-world build (small sizes) and the real-corpus paths (local files, hub errors)."""

import gzip
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from medslm.evaluate import evaluate_probes
from medslm.models import ModelRef, base_model_ref, resolve_model
from medslm.params import PrepareParams
from medslm.prepare import (
    CorpusSourceError,
    iter_hub_documents,
    prepare_base_model,
    record_base_model,
    write_corpus,
    write_real_corpus,
)
from medslm.rundir import JsonlError, RunDir, read_json, read_jsonl
from medslm.toyworld import build

SMALL = dict(n_documents=120, pretrain_documents=60, chat_examples=60, vocab_size=400, hidden_size=32,
             num_layers=1, num_heads=2, intermediate_size=64, pretrain_epochs=1.0, batch_size=8)


def small_build(seed: int, tmp_path):
    p = PrepareParams(**SMALL)
    data = build.make_world_data(p, seed)
    tok = build.train_world_tokenizer(data, p.vocab_size)
    d = RunDir(tmp_path / f"run{seed}").prepare
    files = build.write_world_files(d, data, tok)
    model, history, _ = build.pretrain_tiny_model(p, data, tok, device="cpu")
    return d, model, tok, history, files["probes"]


def test_same_seed_same_files_and_metrics(tmp_path):
    d1, m1, t1, h1, probes1 = small_build(0, tmp_path / "a")
    d2, m2, t2, h2, probes2 = small_build(0, tmp_path / "b")
    for name in ("corpus", "probes", "chat", "heldout", "world"):
        assert getattr(d1, name).read_bytes() == getattr(d2, name).read_bytes(), name
    assert [h["loss"] for h in h1 if "loss" in h] == [h["loss"] for h in h2 if "loss" in h]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = evaluate_probes(m1, t1, probes1), evaluate_probes(m2, t2, probes2)
    assert s1 == s2
    d3, *_ = small_build(1, tmp_path / "c")
    assert d3.corpus.read_bytes() != d1.corpus.read_bytes()


def test_pretraining_lowers_the_loss(tmp_path):
    p = PrepareParams(**{**SMALL, "pretrain_epochs": 4.0})
    data = build.make_world_data(p, 0)
    tok = build.train_world_tokenizer(data, p.vocab_size)
    _, history, _ = build.pretrain_tiny_model(p, data, tok, device="cpu")
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0] - 0.5


def test_pretraining_data_has_no_medical_documents():
    data = build.make_world_data(PrepareParams(**SMALL), 0)
    assert data.pretrain_texts and all("kind" not in t for t in data.pretrain_texts)
    assert {c["kind"] for c in data.chats} <= {"fact", "small_talk", "instruction"}


def local_params(files, **kw):
    kw.setdefault("base_model", "an-org/an-instruct-model")  # a real corpus needs one; reading it does not load it
    return PrepareParams(source="local", local_files=[str(f) for f in files], max_documents=10, **kw)


def test_local_jsonl_parquet_and_gz(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "Erster Text", "url": "u1"}\n{"text": ""}\n{"text": "Zweiter Text"}\n')
    parquet = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["Dritter Text"], "lang": ["en"]}), parquet)
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"text": "Vierter Text"}) + "\n")
    d = RunDir(tmp_path / "run").prepare
    d.path.mkdir(parents=True)
    n = write_real_corpus(local_params([jsonl, parquet, gz]), d, "de")
    docs = read_jsonl(d.corpus)
    assert n == 4 and [x["text"] for x in docs] == ["Erster Text", "Zweiter Text", "Dritter Text", "Vierter Text"]
    assert docs[0]["lang"] == "de" and docs[2]["lang"] == "en" and docs[0]["url"] == "u1"
    assert len({x["id"] for x in docs}) == 4


def test_corpus_progress_ends_at_the_documents_written(tmp_path, capsys):
    """max_documents (10) above the corpus size (4): the bar ends at 4/4, not 4/10."""
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"text": f"Text {i}"}) + "\n" for i in range(3)) + '{"text": ""}\n')
    parquet = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["Vierter Text"]}), parquet)
    d = RunDir(tmp_path / "run").prepare
    d.path.mkdir(parents=True)
    assert write_real_corpus(local_params([jsonl, parquet]), d, "de") == 4
    err = capsys.readouterr().err
    assert "4/4" in err and "/10" not in err and "/5" in err  # started at the 5 records of the files


def test_local_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    d = RunDir(tmp_path / "run").prepare
    d.path.mkdir(parents=True)
    with pytest.raises(JsonlError, match=r"bad\.jsonl:2: missing field\(s\) text"):
        write_real_corpus(local_params([bad]), d, "de")
    with pytest.raises(CorpusSourceError, match="no such corpus file"):
        write_real_corpus(local_params([tmp_path / "missing.jsonl"]), d, "de")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "x.parquet")
    with pytest.raises(CorpusSourceError, match="no column 'text'; columns: body"):
        write_real_corpus(local_params([tmp_path / "x.parquet"]), d, "de")


def test_local_files_must_have_known_suffixes():
    with pytest.raises(ValueError, match="not a .jsonl"):
        PrepareParams(source="local", local_files=["corpus.csv"], base_model="m")


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusSourceError, match="could not stream hub dataset 'HuggingFaceFW/fineweb-2'"):
        next(iter_hub_documents("HuggingFaceFW/fineweb-2", "deu_Latn", "train"))


def test_record_base_model(tmp_path, tiny_model_dir):
    d = RunDir(tmp_path).prepare
    info = record_base_model(d, tiny_model_dir)
    assert info["local"] and info["ref"] == str(tiny_model_dir.resolve())  # outside the run: absolute
    inside = RunDir(tmp_path).prepare.model
    shutil.copytree(tiny_model_dir, inside)
    assert record_base_model(d, inside)["ref"] == "00_prepare/model"  # inside the run: relative to it
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(tmp_path, copy)
    assert base_model_ref(copy).ref == str((copy / "00_prepare" / "model").resolve())  # a copied run uses its copy
    info = record_base_model(d, "Qwen/Qwen2.5-1.5B-Instruct", revision="main")
    assert read_json(d.base_model) == {"ref": "Qwen/Qwen2.5-1.5B-Instruct", "local": False, "revision": "main",
                                       "trust_remote_code": False}


def test_prepare_base_model_trains_the_tiny_one_or_records_a_given_one(tmp_path, tiny_model_dir):
    """00_prepare's two library calls: the toy world without a base model pretrains and saves the tiny Llama; with one
    it records that model, reuses the tokenizer the corpus was written with, and loads weights only where probes
    will score them; a real corpus without a base model is an error naming the field."""
    d = RunDir(tmp_path / "toy").prepare
    world, tok = write_corpus(PrepareParams(**SMALL), d, 0, "en")
    assert d.corpus.exists() and d.probes.exists() and world is not None
    base = prepare_base_model(PrepareParams(**SMALL), d, world, tok, "cpu")
    assert base.ref == read_json(d.base_model) and base.ref["ref"] == "00_prepare/model"
    assert (d.model / "model.safetensors").exists() and base.model is not None and base.tokenizer is tok
    assert base.loss_curve and base.pretrain_s > 0

    given = PrepareParams(**{**SMALL, "base_model": str(tiny_model_dir)})
    d = RunDir(tmp_path / "given").prepare
    world, tok = write_corpus(given, d, 0, "en")
    assert len(tok) == 400  # the given model's tokenizer, not one trained on the world
    base = prepare_base_model(given, d, world, tok, "cpu")
    assert base.tokenizer is tok and base.model is not None and base.loss_curve is None
    assert base.ref["ref"] == str(tiny_model_dir.resolve()) and not (d.model / "model.safetensors").exists()

    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "Ein Text"}\n')
    d = RunDir(tmp_path / "local").prepare
    d.path.mkdir(parents=True)
    assert write_corpus(local_params([docs], base_model=str(tiny_model_dir)), d, 0, "de") == (None, None)
    base = prepare_base_model(local_params([docs], base_model=str(tiny_model_dir)), d, None, None, "cpu")
    assert base.model is None and len(base.tokenizer) == 400  # no probes to score: no weights loaded
    with pytest.raises(ValueError, match="source: local needs base_model"):  # refused before anything is read
        local_params([docs], base_model=None)


def test_resolve_model_one_rule(tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="run 00_prepare"):
        base_model_ref(tmp_path)
    record_base_model(RunDir(tmp_path).prepare, "org/model", revision="v1", trust_remote_code=False)
    assert resolve_model(None, tmp_path) == ModelRef("org/model", "v1", False)
    assert resolve_model(None, tmp_path, trust_remote_code=True).trust_remote_code  # a step may only add permission
    assert resolve_model(str(tiny_model_dir), tmp_path) == ModelRef(str(tiny_model_dir))
    (RunDir(tmp_path).prepare.base_model).write_text('["not", "an", "object"]')
    with pytest.raises(ValueError, match="base_model.json: expected an object"):
        base_model_ref(tmp_path)


def test_max_probes_per_relation_keeps_a_seeded_sample_of_each_relation(tmp_path):
    p = PrepareParams(**SMALL)
    data = build.make_world_data(p, 0)
    tok = build.train_world_tokenizer(data, p.vocab_size)
    every = build.write_world_files(RunDir(tmp_path / "all").prepare, data, tok)["probes"]
    thin = build.write_world_files(RunDir(tmp_path / "thin").prepare, data, tok, max_probes_per_relation=2)["probes"]
    again = build.write_world_files(RunDir(tmp_path / "again").prepare, data, tok, max_probes_per_relation=2)["probes"]

    def groups(probes):
        out = {}
        for probe in probes:
            out.setdefault((probe["probe"], probe["relation"], probe["lang"]), []).append(probe["id"])
        return out

    assert thin == again and len(thin) < len(every)
    assert set(groups(thin)) == set(groups(every))  # every (kind, relation, language) keeps probes
    assert all(len(ids) == min(2, len(groups(every)[key])) for key, ids in groups(thin).items())
    ids = [probe["id"] for probe in every]
    assert [ids.index(probe["id"]) for probe in thin] == sorted(ids.index(probe["id"]) for probe in thin)
    assert read_jsonl(RunDir(tmp_path / "thin").prepare.probes) == thin
    with pytest.raises(ValueError, match="max_probes_per_relation"):
        PrepareParams(max_probes_per_relation=0)
