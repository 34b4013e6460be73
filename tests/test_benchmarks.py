"""Benchmark loaders on records written in each dataset's real schema; k-shot and chat contexts; bad input."""

from __future__ import annotations

import json

import pytest

from medslm.evaluate.benchmarks import (
    REGISTRY,
    BenchmarkError,
    accuracy_with_interval,
    build_items,
    docs_from_records,
    load_local,
)
from medslm.evaluate.intervals import wilson_interval
from medslm.evaluate.mcq import MCQItem, MCQResult

# one record per dataset, in the field layout of its hub card (see the module docstring of benchmarks.py)
RECORDS = {
    "medqa": {"id": "train-00000", "sent1": "A 23-year-old woman has burning on urination. Best treatment?",
              "sent2": "", "ending0": "Ampicillin", "ending1": "Ceftriaxone", "ending2": "Nitrofurantoin",
              "ending3": "Doxycycline", "label": 2},
    "medmcqa": {"id": "e9ad821a", "question": "Which vitamin is supplied from only animal source?",
                "opa": "Vitamin C", "opb": "Vitamin B7", "opc": "Vitamin B12", "opd": "Vitamin D", "cop": 2,
                "choice_type": "single", "exp": "...", "subject_name": "Biochemistry", "topic_name": "Vitamins"},
    "pubmedqa": {"pubid": 21645374, "question": "Do mitochondria play a role in remodelling lace plant leaves?",
                 "context": {"contexts": ["Programmed cell death (PCD) is ...", "The following organelle ..."],
                             "labels": ["BACKGROUND", "RESULTS"], "meshes": ["Alismataceae"]},
                 "long_answer": "Results depicted mitochondrial dynamics ...", "final_decision": "yes"},
    "mmlu_medical": {"question": "What is the embryological origin of the hyoid bone?", "subject": "anatomy",
                     "choices": ["The first pharyngeal arch", "The first and second pharyngeal arches",
                                 "The second pharyngeal arch", "The second and third pharyngeal arches"],
                     "answer": 3},
    "mmmlu_de": {"Unnamed: 0": 0, "Question": "Welcher Knochen ist der längste des Körpers?", "A": "Femur",
                 "B": "Tibia", "C": "Humerus", "D": "Fibula", "Answer": "A", "Subject": "anatomy"},
    "global_mmlu_de": {"sample_id": "anatomy/test/0", "subject": "anatomy", "subject_category": "STEM",
                       "question": "Welcher Nerv versorgt den Zwerchfellmuskel?", "option_a": "N. vagus",
                       "option_b": "N. phrenicus", "option_c": "N. accessorius", "option_d": "N. hypoglossus",
                       "answer": "B", "required_knowledge": "", "time_sensitive": "", "reference": "",
                       "culture": "", "region": "", "country": "", "cultural_sensitivity_label": "CA",
                       "is_annotated": True},
}
EXPECTED = {  # (first line of the prompt, gold index, choices)
    "medqa": ("Question: A 23-year-old woman", 2, ["A", "B", "C", "D"]),
    "medmcqa": ("Question: Which vitamin", 2, ["A", "B", "C", "D"]),
    "pubmedqa": ("Abstract: Programmed cell death", 0, ["yes", "no", "maybe"]),
    "mmlu_medical": ("The following are multiple choice questions (with answers) about anatomy.", 3,
                     ["A", "B", "C", "D"]),
    "mmmlu_de": ("The following are multiple choice questions (with answers) about anatomy (German).", 0,
                 ["A", "B", "C", "D"]),
    "global_mmlu_de": ("Welcher Nerv versorgt", 1, ["A", "B", "C", "D"]),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_loader_maps_real_schema(name):
    bench = REGISTRY[name]
    docs = docs_from_records(bench, [(f"{name} row 0", RECORDS[name])])
    (item,) = build_items(bench, docs)
    first_line, gold, choices = EXPECTED[name]
    assert item.context.startswith(first_line)
    assert item.context.endswith("Answer:") and item.delimiter == " "
    assert item.gold == gold and item.choices == choices
    if bench.letter_choices:  # the options are listed under their letters
        assert all(f"\n{letter}. {opt}\n" in item.context for letter, opt in zip("ABCD", docs[0].options, strict=True))


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_missing_field_names_the_row(name):
    rec = dict(RECORDS[name])
    key = {"medqa": "label", "medmcqa": "cop", "pubmedqa": "final_decision", "mmlu_medical": "choices",
           "mmmlu_de": "Question", "global_mmlu_de": "option_c"}[name]
    del rec[key]
    with pytest.raises(BenchmarkError, match=rf"{name} row 7: field '{key}' missing"):
        docs_from_records(REGISTRY[name], [(f"{name} row 7", rec)])


def test_subject_filter_keeps_medical_subjects():
    other = {**RECORDS["global_mmlu_de"], "subject": "world_religions"}
    docs = docs_from_records(REGISTRY["global_mmlu_de"], [("r0", RECORDS["global_mmlu_de"]), ("r1", other)])
    assert [d.subject for d in docs] == ["anatomy"]
    suffixed = {**RECORDS["mmmlu_de"], "Subject": "anatomy_test.csv_de-DE.csv"}  # as some MMMLU rows carry
    assert docs_from_records(REGISTRY["mmmlu_de"], [("r0", suffixed)])[0].subject == "anatomy"


def _local_records(n=6):
    return [{"id": f"q{i}", "question": f"Frage {i}?", "choices": ["eins", "zwei", "drei"], "answer": i % 3,
             "lang": "de"} for i in range(n)]


def test_local_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "bench.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in _local_records()), encoding="utf-8")
    csv_file = tmp_path / "bench.csv"
    csv_file.write_text("id,question,A,B,C,answer\nq0,Frage 0?,eins,zwei,drei,A\nq1,Frage 1?,eins,zwei,drei,2\n",
                        encoding="utf-8")
    docs = load_local(jsonl)
    assert [d.answer for d in docs] == [0, 1, 2, 0, 1, 2] and docs[0].options == ["eins", "zwei", "drei"]
    from_csv = load_local(csv_file)
    assert [(d.id, d.answer, d.options) for d in from_csv] == [("q0", 0, ["eins", "zwei", "drei"]),
                                                               ("q1", 2, ["eins", "zwei", "drei"])]


def test_local_bad_input_names_file_and_line(tmp_path):
    recs = _local_records(3)
    recs[1]["answer"] = 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"bad\.jsonl:2: answer=5 is out of range; allowed: 0–2 or A, B, C"):
        load_local(bad)
    del recs[1]["answer"]
    recs[1]["answer"] = 1
    del recs[2]["question"]
    bad.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"bad\.jsonl:3: field 'question' missing"):
        load_local(bad)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("question,A,B,answer\nok?,x,y,B\nbad?,x,y,E\n", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"bad\.csv:3: answer='E' is out of range"):
        load_local(bad_csv)


def test_k_shot_first_n_and_seeded_default():
    bench = REGISTRY["mmlu_medical"]
    pool = docs_from_records(bench, [(f"dev {i}", {**RECORDS["mmlu_medical"], "question": f"Dev question {i}?"})
                                     for i in range(5)])
    docs = docs_from_records(bench, [("test 0", RECORDS["mmlu_medical"])])
    (item,) = build_items(bench, docs, k=2, pool=pool)
    description = "The following are multiple choice questions (with answers) about anatomy.\n\n"
    assert item.context.startswith(description + "Dev question 0?\nA.")
    assert "Answer: D\n\nDev question 1?" in item.context and "Dev question 2" not in item.context
    assert item.context.count("Answer:") == 3

    medqa = REGISTRY["medqa"]  # lm-eval's default sampler: seeded random.sample, per doc in order
    pool = docs_from_records(medqa, [(f"tr {i}", {**RECORDS["medqa"], "sent1": f"Train case {i}?"})
                                     for i in range(20)])
    docs = docs_from_records(medqa, [(f"te {i}", {**RECORDS["medqa"], "sent1": f"Test case {i}?"}) for i in range(4)])
    first = [it.context for it in build_items(medqa, docs, k=3, pool=pool, seed=1234)]
    again = [it.context for it in build_items(medqa, docs, k=3, pool=pool, seed=1234)]
    other = [it.context for it in build_items(medqa, docs, k=3, pool=pool, seed=99)]
    assert first == again and first != other
    assert all(c.count("Train case") == 3 for c in first)


def test_k_shot_from_the_evaluated_split_skips_the_item_itself():
    bench = REGISTRY["mmmlu_de"]
    docs = docs_from_records(bench, [(f"r{i}", {**RECORDS["mmmlu_de"], "Question": f"Frage {i}?"}) for i in range(4)])
    items = build_items(bench, docs, k=2)
    assert "Frage 0?" not in items[0].context.split("\n\n")[1] + items[0].context.split("\n\n")[2]
    assert items[0].context.count("Frage 0?") == 1 and items[1].context.count("Frage 1?") == 1


def test_chat_template_context(tiny_tokenizer):
    bench = REGISTRY["mmlu_medical"]
    docs = docs_from_records(bench, [("r0", RECORDS["mmlu_medical"])])
    pool = docs_from_records(bench, [("d0", {**RECORDS["mmlu_medical"], "question": "Dev?"})])
    (item,) = build_items(bench, docs, k=1, pool=pool, tokenizer=tiny_tokenizer, chat_template=True)
    messages = [{"role": "system", "content": bench.description(docs[0])},
                {"role": "user", "content": "Dev?\nA. The first pharyngeal arch\nB. The first and second pharyngeal "
                 "arches\nC. The second pharyngeal arch\nD. The second and third pharyngeal arches\nAnswer:"},
                {"role": "assistant", "content": "D"},
                {"role": "user", "content": bench.prompt(docs[0])}]
    assert item.context == tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert item.delimiter == "" and item.context.endswith("<|assistant|>")


def test_wilson_interval_against_known_values():
    low, high = wilson_interval(81, 263)  # Wilson (1927) / Newcombe (1998) worked example: 0.2553–0.3662
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_accuracy_with_interval():
    results = [MCQResult(MCQItem("c", ["a", "b"], i % 2), [-1.0, -2.0]) for i in range(10)]
    out = accuracy_with_interval(results)
    assert out["acc"] == 0.5 and out["n"] == 10
    assert out["acc_ci95"][0] < 0.5 < out["acc_ci95"][1]
