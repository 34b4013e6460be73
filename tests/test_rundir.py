"""Run-directory contract: atomic writes, JSONL errors with file:line, manifest and artifacts."""

import json

import pytest

from medslm.rundir import (
    JsonlError,
    RunDir,
    atomic_path,
    package_versions,
    read_json,
    read_jsonl,
    sha256_file,
    write_json,
    write_jsonl,
)


def test_jsonl_round_trip(tmp_path):
    recs = [{"id": 1, "text": "Grüße"}, {"id": 2, "text": "b"}]
    assert write_jsonl(tmp_path / "a.jsonl", recs) == 2
    assert read_jsonl(tmp_path / "a.jsonl") == recs


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": broken}\n')
    with pytest.raises(JsonlError, match=r"bad\.jsonl:3: not valid JSON"):
        read_jsonl(path)


def test_jsonl_not_an_object_and_missing_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(JsonlError, match=r"c\.jsonl:2: expected a JSON object"):
        read_jsonl(path)
    path.write_text('{"text": "ok"}\n{"id": 3}\n')
    with pytest.raises(JsonlError, match=r"c\.jsonl:2: missing field\(s\) text"):
        read_jsonl(path, required=("text",))


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_read_json_error_names_line(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{\n  "a": 1,\n  oops\n}')
    with pytest.raises(ValueError, match=r"x\.json:3"):
        read_json(path)


def test_step_paths_follow_the_layout(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.prepare.corpus == tmp_path / "00_prepare" / "corpus.jsonl"
    assert rd.prepare.model == tmp_path / "00_prepare" / "model"
    assert rd.classify.filtered == tmp_path / "02_classify" / "filtered.jsonl"
    assert rd.cpt.model == tmp_path / "03_cpt" / "model"
    assert rd.merge.selected == tmp_path / "04_merge" / "selected"
    assert rd.step("evaluate").metrics == tmp_path / "07_evaluate" / "metrics.json"
    assert rd.prepare.figure("loss") == tmp_path / "00_prepare" / "figures" / "loss.png"


def test_manifest_and_artifacts(tmp_path):
    rd = RunDir(tmp_path)
    rd.update_step("prepare", status="running")
    (tmp_path / "00_prepare").mkdir()
    (tmp_path / "00_prepare" / "corpus.jsonl").write_text('{"text": "a"}\n')
    arts = rd.collect_artifacts("prepare")
    corpus = tmp_path / "00_prepare" / "corpus.jsonl"
    assert arts == [{"path": "00_prepare/corpus.jsonl", "bytes": 14, "mtime_ns": corpus.stat().st_mtime_ns,
                     "sha256": sha256_file(corpus)}]
    entry = rd.update_step("prepare", status="done", artifacts=arts)
    assert rd.artifacts_intact(entry)
    assert json.loads(rd.manifest_path.read_text())["steps"]["prepare"]["status"] == "done"
    (tmp_path / "00_prepare" / "corpus.jsonl").write_text("changed size\n")
    assert not rd.artifacts_intact(entry)


def test_package_versions_lists_the_stack():
    versions = package_versions()
    assert versions["torch"] and versions["transformers"] and versions["papermill"]
    assert package_versions(["surely-not-installed-pkg"]) == {"surely-not-installed-pkg": None}
