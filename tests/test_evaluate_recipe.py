"""07_evaluate's recipe on tiny models: every variant, per-item records, a failed row that does not stop the others,
win-rates from the offline judge and from a real `transformers serve`, bad benchmark files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import build_tiny_model_dir

from medslm.evaluate.benchmarks import BenchmarkError
from medslm.evaluate.judge import judge_pairs, win_rates
from medslm.evaluate.recipe import EvaluateRecipe
from medslm.params import EvaluateParams, RunParams
from medslm.prepare import record_base_model
from medslm.rundir import RunDir, read_json, read_jsonl, write_json, write_jsonl

PROBES = [
    {"id": "m1", "probe": "cloze", "domain": "medical", "lang": "en", "relation": "drug",
     "context": "Metformin is used to treat", "choices": ["type 2 diabetes", "asthma", "gout", "acne"], "gold": 0},
    {"id": "g1", "probe": "cloze", "domain": "general", "lang": "en", "relation": "capital",
     "context": "The capital of France is", "choices": ["Paris", "Berlin", "Rome", "Madrid"], "gold": 0},
    {"id": "c1", "probe": "chat", "domain": "general", "lang": "de", "relation": "capital",
     "context": "<|user|> Hauptstadt von Frankreich?<|end|>\n<|assistant|>", "choices": ["Paris", "Rom", "Oslo", "Bern"],
     "gold": 0, "delimiter": " "},
]
SCHEMA = {"type": "object", "properties": {"drug": {"type": "string"}}, "required": ["drug"]}

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows() -> list[dict]:
    text = {"messages": [{"role": "user", "content": "Was behandelt Metformin?"},
                         {"role": "assistant", "content": "Typ-2-Diabetes."}],
            "task": "qa", "format": "text", "language": "de", "answer_language": "de", "id": "t1"}
    js = {"messages": [{"role": "user", "content": "Extract the drug: Metformin 500 mg."},
                       {"role": "assistant", "content": '{"drug": "Metformin"}'}],
          "task": "extract", "format": "json", "language": "en", "answer_language": "en", "id": "t2"}
    return [text, js, {**text, "id": "t3"}, {**js, "id": "t4"}]




@pytest.fixture()
def run_dir(tmp_path, tiny_tokenizer, tiny_model_dir) -> Path:
    run = RunDir(tmp_path / "run")
    record_base_model(run.prepare, tiny_model_dir)
    write_jsonl(run.prepare.probes, PROBES)
    build_tiny_model_dir(run.merge.selected, tiny_tokenizer, seed=1)
    build_tiny_model_dir(run.align.model("sft"), tiny_tokenizer, seed=2)
    write_jsonl(run.synthesize.sft / "test.jsonl", _rows())
    write_json(run.synthesize.schemas, {"extract": SCHEMA})
    return run.path


def test_every_variant_is_scored_and_recorded_per_item(run_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))  # no weights: cannot be loaded
    params = EvaluateParams(comparators={"broken": str(broken)}, max_new_tokens=4, bootstrap=100,
                            comparisons=["merge:instruct", "sft:merge", "broken:instruct"])
    recipe = EvaluateRecipe(params, run_dir, RunParams(device="cpu"))
    metrics = recipe.run()
    table = {row["variant"]: row for row in metrics["table"]}
    assert list(table) == ["instruct", "merge", "sft", "broken"]  # cpt and dpo folders do not exist: skipped
    assert table["broken"]["status"] == "failed" and table["broken"]["error"]  # a row with its reason
    assert (RunDir(run_dir).evaluate.items / "broken.error.txt").is_file()
    items = RunDir(run_dir).evaluate.items
    for label in ("instruct", "merge", "sft"):
        records = read_jsonl(items / f"{label}.toy_probes.mcq.jsonl")
        assert len(records) == 3 and table[label]["status"] == "ok"
        assert table[label]["toy_probes"] == pytest.approx(sum(r["correct"] for r in records) / 3)  # from the items
        generations = read_jsonl(items / f"{label}.generations.jsonl")
        assert [g["id"] for g in generations] == ["t1", "t2", "t3", "t4"]
        json_rows = [g for g in generations if g["format"] == "json"]
        assert all("json_valid" in g["scores"] for g in json_rows)
        by_task: dict[str, list[float]] = {}
        for g in generations:  # the row's task score: the mean over tasks of the answers' headline scores
            by_task.setdefault(g["task"], []).append(g["scores"]["score"])
        means = [sum(v) / len(v) for v in by_task.values()]
        assert table[label]["task_score"] == pytest.approx(sum(means) / len(means))
    assert set(metrics["win_rates"]) == {"merge:instruct", "sft:merge"}  # the broken model has no answers
    judged = read_jsonl(items / "merge_vs_instruct.judge.jsonl")
    assert len(judged) == 4 and metrics["win_rates"]["merge:instruct"]["win_rate"] == pytest.approx(
        sum(o["score"] for o in judged) / 4)
    assert read_json(RunDir(run_dir).evaluate.table) == metrics["table"]


def test_a_bad_benchmark_file_names_file_and_line(run_dir, tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": 0}\n'
                     '{"question": "Q2?", "choices": ["a", "b"], "answer": 5}\n')
    recipe = EvaluateRecipe(EvaluateParams(benchmarks=[str(bench)]), run_dir, RunParams(device="cpu"))
    with pytest.raises(BenchmarkError, match=rf"{bench}:2.*answer"):  # an answer index out of range
        recipe.load_benchmarks()
    bench.write_text('{"question": "Q?", "options": ["a", "b"], "answer": 0}\n')
    with pytest.raises(BenchmarkError, match=rf"{bench}:1: field 'choices' missing"):
        recipe.load_benchmarks()


def test_judge_through_a_real_transformers_serve(served_model):
    """The tiny served model answers gibberish: no parseable verdict, so every pair is a tie, never a crash."""
    from medslm.llm import LLM, OpenAIBackend

    llm = LLM(OpenAIBackend(served_model["base_url"], served_model["model"], max_new_tokens=8, max_retries=0), None)
    pairs = [{"id": str(i), "question": "Capital of France?", "model": "Paris.", "baseline": "Rome.", "lang": "en"}
             for i in range(3)]
    outcomes = judge_pairs(llm, pairs)
    assert len(outcomes) == 3 and all(o.score in (0.0, 0.5, 1.0) for o in outcomes)
    assert llm.stats["calls"] == 6  # both orders of every pair were asked
    assert 0 <= win_rates(outcomes, n_boot=100)["win_rate"] <= 1


def test_headline_of_a_row_and_of_a_failed_row():
    from medslm.evaluate.recipe import Variant
    from medslm.models import ModelRef

    ok = Variant("sft", ModelRef("m"), {"toy_probes": {"acc": 0.61234, "n": 3}, "tasks": {}, "task_score": 0.1})
    assert ok.headline() == {"toy_probes": 0.612, "task_score": 0.1}
    assert Variant("x", ModelRef("m"), error="OSError: no weights").headline() == {"error": "OSError: no weights"}
