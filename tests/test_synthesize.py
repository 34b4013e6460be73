"""05_synthesize: exact answers valid for their schemas, seeded outputs, every filter measured against the injected
faults (ground truth), preference pairs, splits by document, the openai teacher against a real server, bad input."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from jsonschema import Draft202012Validator, validate
from pydantic import ValidationError

from medslm.llm import LLM, FunctionBackend
from medslm.params import ProfileError, SynthesizeParams, parse_profile
from medslm.rundir import RunDir, read_jsonl
from medslm.synthesize import recipe
from medslm.synthesize.faults import REJECTION_KINDS, split_sentences
from medslm.synthesize.filters import LanguageFilter, dedup_verdicts
from medslm.synthesize.grid import Example, build_grid, schema_outline
from medslm.synthesize.output import split_documents
from medslm.synthesize.tasks import TASK_NAMES, SchemaFileError, Task, load_schemas, make_tasks
from medslm.synthesize.teachers import llm_answers, parse_json_reply
from medslm.toyworld.clinical import generate_documents, load_clinical_templates
from medslm.toyworld.knowledge import load_knowledge

SMALL = {"examples_per_cell": 2, "doc_types": ["discharge_letter", "lab_report", "patient_leaflet"]}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The step with its default (smoke) parameters: the acceptance run."""
    out = RunDir(tmp_path_factory.mktemp("smoke")).synthesize
    synth, metrics = recipe.run_step(SynthesizeParams(), out, seed=0)
    return {"synth": synth, "metrics": metrics, "out": out}


def _docs(per_cell: int = 2):
    return generate_documents(load_knowledge(), load_clinical_templates().doc_types, ["de", "en"], per_cell, seed=0)


# --------------------------------------------------------------------------------------------------------------
# Tasks and schemas
# --------------------------------------------------------------------------------------------------------------


def test_every_task_answer_validates_against_its_schema_in_both_languages():
    kb = load_knowledge()
    tasks = make_tasks(list(TASK_NAMES), kb)
    schemas = load_schemas(tasks)
    examples = build_grid(_docs(), tasks, ["json"], schemas)
    assert len(tasks) >= 7 and len(examples) == 7 * 10 * 2 * 2
    for e in examples:
        task: Task = tasks[e.task]
        for lang in ("de", "en"):
            validate(task.answer(e.item, lang).data, schemas[e.task])
        assert json.loads(e.reference) == task.answer(e.item, e.answer_lang).data
    # negative control: the schemas reject an extra field and a missing one
    qa = Draft202012Validator(schemas["qa"])
    assert not qa.is_valid({"answer": "x", "note": "y"}) and not qa.is_valid({})


def test_no_reference_answer_has_an_empty_slot():
    """A document without a diagnosis (a nursing note about a drug) once gave "… Patienten mit , behandelt mit …"."""
    kb = load_knowledge()
    tasks = make_tasks(list(TASK_NAMES), kb)
    examples = build_grid(_docs(20), tasks, ["text"], load_schemas(tasks))
    empty_slot = re.compile(r"\s[,.;:]|\s{2}|\(\s*\)")
    assert not [e.reference for e in examples if empty_slot.search(e.reference)]
    summaries = [e for e in examples if e.task == "summary"]
    assert any(not e.item.doc.entities(e.answer_lang)["diagnoses"] for e in summaries)  # the case is there

def test_tasks_per_document_deals_each_cell_evenly_over_the_tasks():
    kb = load_knowledge()
    tasks = make_tasks(list(TASK_NAMES), kb)
    docs = generate_documents(kb, ["discharge_letter", "lab_report"], ["de", "en"], 14, seed=0)
    examples = build_grid(docs, tasks, ["text", "json"], load_schemas(tasks), tasks_per_document=2)
    per_doc: dict[str, set[str]] = {}
    for e in examples:
        per_doc.setdefault(e.doc_id, set()).add(e.task)
    assert len(per_doc) == len(docs) and all(len(names) == 2 for names in per_doc.values())
    assert len(examples) == len(docs) * 2 * 2
    cells = Counter((e.doc_type, e.prompt_lang, e.task) for e in examples if e.format == "text")
    # 14 documents × 2 tasks over 7 tasks: each task 4 documents in each (type, language)
    assert set(cells.values()) == {4} and len(cells) == 2 * 2 * len(TASK_NAMES)
    # 0 (the default) keeps every task for every document
    assert len(build_grid(docs, tasks, ["text"], load_schemas(tasks))) == len(docs) * len(TASK_NAMES)


def test_json_prompts_carry_the_outline_or_the_full_schema():
    kb = load_knowledge()
    tasks = make_tasks(["extract", "deid", "specialty"], kb)
    schemas = load_schemas(tasks)
    assert schema_outline(schemas["extract"]) == '{"diagnoses": ["…", …], "drugs": ["…", …], "lab_tests": ["…", …]}'
    assert schema_outline(schemas["deid"]) == \
        '{"text": "…", "removed": [{"type": "NAME" | "DATE" | "PLACE", "text": "…"}, …]}'
    assert schema_outline(schemas["specialty"]) == '{"specialty": "…"}'  # 38 labels: more than MAX_OUTLINE_ENUM
    docs = _docs(1)[:2]
    outline = build_grid(docs, tasks, ["json"], schemas)
    full = build_grid(docs, tasks, ["json"], schemas, json_prompt="schema")
    for short, long in zip(outline, full, strict=True):
        assert schema_outline(schemas[short.task]) in short.messages[1]["content"]
        assert json.dumps(schemas[long.task], ensure_ascii=False) in long.messages[1]["content"]
        assert short.reference == long.reference and len(short.messages[1]["content"]) < len(long.messages[1]["content"])


def test_answers_are_exact_facts_of_the_world():
    kb = load_knowledge()
    tasks = make_tasks(["qa", "specialty", "translate", "extract"], kb)
    for e in build_grid(_docs(), tasks, ["json"], load_schemas(tasks)):
        data, case = json.loads(e.reference), e.item.doc.case
        if e.task == "qa":
            assert data["answer"] == case[e.item.choice["role"]].o[e.answer_lang]
        elif e.task == "specialty":
            organ = case["specialty"].o["en"]
            assert [f.s["en"] for f in kb.relation("specialty_organ").facts if f.o["en"] == organ] == \
                [case["specialty"].s["en"]]
        elif e.task == "translate":
            assert e.answer_lang != e.prompt_lang and data["target_language"] == e.answer_lang
        else:
            drug = case["treatment"].s[e.prompt_lang]
            assert (drug in data["drugs"]) == (drug in e.item.doc.text)


# --------------------------------------------------------------------------------------------------------------
# The acceptance run: grid, sizes, filters against injected faults
# --------------------------------------------------------------------------------------------------------------


def test_grid_and_sizes_of_the_smoke_run(smoke):
    grid, counts = smoke["metrics"]["grid"], smoke["metrics"]["counts"]
    assert len(grid["tasks"]) >= 7 and len(grid["doc_types"]) >= 10
    assert grid["languages"] == ["de", "en"] and grid["formats"] == ["json", "text"]
    assert grid["cells"] == len(grid["tasks"]) * len(grid["doc_types"]) * 2 * 2
    assert counts["sft"]["train"] >= 3000 and counts["dpo"]["train"] >= 1000


def test_kept_json_answers_are_schema_valid_on_disk(smoke):
    out, schemas = smoke["out"], smoke["synth"].schemas
    validators = {t: Draft202012Validator(s) for t, s in schemas.items()}
    n = 0
    for split in ("train", "test"):
        for rec in read_jsonl(out.sft / f"{split}.jsonl"):
            if rec["format"] == "json":
                assert validators[rec["task"]].is_valid(json.loads(rec["messages"][-1]["content"])), rec["id"]
                n += 1
    assert n > 1000
    injected = [e for e in smoke["synth"].examples if "invalid_json" in e.faults]
    assert injected and all(e.verdicts["json"] == "removed" for e in injected)


def test_language_filter_against_injected_faults(smoke):
    report = smoke["metrics"]["faults"]
    examples = smoke["synth"].examples
    bad = [e for e in examples if {"wrong_language", "mixed_language"} & set(e.faults)]
    clean = [e for e in examples if not e.faults and e.status == "ok"]
    assert len(bad) >= 100 and len(clean) >= 2000
    removed_bad = sum(e.verdicts["language"] == "removed" for e in bad) / len(bad)
    removed_clean = sum(e.verdicts["language"] == "removed" for e in clean) / len(clean)
    assert removed_bad >= 0.95 and removed_clean <= 0.02
    assert report["mixed_language"]["injected"] >= 30 and report["wrong_language"]["injected"] >= 30
    # mixed answers really are mixed: a German answer that keeps German sentences
    mixed = [e for e in bad if "mixed_language" in e.faults]
    assert all(e.answer_lang == "de" for e in mixed)
    assert sum(len(split_sentences(e.answer)) >= 2 for e in mixed) == len(mixed)


def test_language_filter_on_hand_written_answers():
    lang = LanguageFilter(["de", "en"])
    answers = [
        ["Der Patient wurde mit Metformin gegen Typ-2-Diabetes behandelt."],  # clean German
        ["The patient was treated with Metformin for type 2 diabetes."],  # English where German is expected
        ["Der Patient wurde mit Metformin behandelt.", "Please consult your doctor if the symptoms get worse."],
        ["Diagnosen: Asthma."],  # too short to judge
    ]
    shares = lang.foreign_shares(answers, ["de", "de", "de", "de"])
    assert shares[0] == 0.0 and shares[1] == 1.0 and 0.3 < shares[2] < 1.0 and shares[3] is None
    assert lang.foreign_shares(answers[1:2], ["en"]) == [0.0]


def test_dedup_and_length_against_injected_faults(smoke):
    examples = smoke["synth"].examples
    copies = [e for e in examples if e.duplicate_of is not None]
    assert len(copies) >= 100
    assert sum(e.verdicts["dedup"] == "removed" for e in copies) / len(copies) >= 0.95
    # dedup drops the later one: the originals stay (unless they duplicate another example themselves)
    by_id = {e.id: e for e in examples}
    originals = [by_id[e.duplicate_of] for e in copies]
    assert sum(o.verdicts["dedup"] == "pass" for o in originals) / len(originals) >= 0.95
    verbose = [e for e in examples if "verbose" in e.faults]
    clean = [e for e in examples if not e.faults]
    assert sum(e.verdicts["length"] == "removed" for e in verbose) / len(verbose) >= 0.9
    assert sum(e.verdicts["length"] == "removed" for e in clean) / len(clean) <= 0.02
    wrong = [e for e in examples if "wrong_fact" in e.faults]
    assert wrong and all(e.verdicts["judge"] in ("removed", "n/a") for e in wrong)
    assert all(not e.kept for e in wrong)


def test_dedup_unit_exact_near_and_distinct():
    tasks = make_tasks(["summary"], load_knowledge())
    examples = build_grid(_docs(1)[:6], tasks, ["text"], load_schemas(tasks))
    for e in examples:
        e.answer = e.reference
    first = examples[0]
    exact = Example(**{**first.__dict__, "id": "exact"})
    near_messages = [dict(m) for m in first.messages]
    near_messages[-1]["content"] = near_messages[-1]["content"].replace(" ", "  ", 3).replace(".", ". .", 1)
    near = Example(**{**first.__dict__, "id": "near", "messages": near_messages})
    verdicts = dedup_verdicts([*examples, exact, near])
    assert verdicts["exact"] == "removed" and verdicts["near"] == "removed"
    assert all(verdicts[e.id] == "pass" for e in examples)  # different documents of the same type are not duplicates


# --------------------------------------------------------------------------------------------------------------
# Outputs: seeded, split by document, loadable, with provenance and cards
# --------------------------------------------------------------------------------------------------------------


def _files(out):
    return {p: (out.path / p).read_bytes() for p in ("sft/train.jsonl", "sft/test.jsonl", "dpo/train.jsonl",
                                                        "dpo/test.jsonl", "examples.jsonl", "sft/README.md")}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    params = SynthesizeParams(**SMALL)
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = RunDir(tmp_path / name).synthesize
        recipe.run_step(params, out, seed=seed)
        runs.append(_files(out))
    assert runs[0] == runs[1]
    assert runs[0]["sft/train.jsonl"] != runs[2]["sft/train.jsonl"]


def test_test_split_is_held_out_by_document_and_loads_with_datasets(smoke):
    from datasets import load_dataset

    out = smoke["out"]
    for name in ("sft", "dpo"):
        train = read_jsonl(out.path / name / "train.jsonl")
        test = read_jsonl(out.path / name / "test.jsonl")
        assert train and test
        assert not {r["doc_id"] for r in train} & {r["doc_id"] for r in test}
        loaded = load_dataset("json", data_files={"train": str(out.path / name / "train.jsonl"),
                                                  "test": str(out.path / name / "test.jsonl")})
        assert loaded["train"].num_rows == len(train) and loaded["test"].num_rows == len(test)
        card = (out.path / name / "README.md").read_text()
        assert card.startswith("---\n") and "configs:" in card and "split: test" in card
    docs = read_jsonl(out.documents)
    held = {d["id"] for d in docs if d["split"] == "test"}
    assert 0.08 <= len(held) / len(docs) <= 0.2
    rec = read_jsonl(out.sft / "train.jsonl")[0]
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
    for field in ("task", "doc_type", "language", "format", "teacher", "prompt_hash", "faults", "filters", "reference"):
        assert field in rec


def test_preference_pairs(smoke):
    out, schemas = smoke["out"], smoke["synth"].schemas
    pairs = read_jsonl(out.dpo / "train.jsonl")
    kinds = {p["rejection"] for p in pairs}
    assert kinds == set(REJECTION_KINDS)
    lang = LanguageFilter(["de", "en"])
    for p in pairs:
        chosen, rejected = p["chosen"][0]["content"], p["rejected"][0]["content"]
        assert chosen != rejected and p["prompt"][-1]["role"] == "user"
        assert chosen == p["reference"] or p["teacher"] != "programmatic"
        if p["rejection"] == "invalid_json":
            try:
                assert not Draft202012Validator(schemas[p["task"]]).is_valid(json.loads(rejected))
            except json.JSONDecodeError:
                pass
        if p["rejection"] == "verbose":
            assert len(rejected.split()) > len(chosen.split()) + 20
    wrong = [p for p in pairs if p["rejection"] == "wrong_language" and p["format"] == "text"][:40]
    shares = lang.foreign_shares([split_sentences(p["rejected"][0]["content"]) for p in wrong],
                                 [p["answer_language"] for p in wrong])
    assert all(s is not None and s > 0.5 for s in shares)


# --------------------------------------------------------------------------------------------------------------
# LLM teachers: retries of unparseable replies, failures counted, resume from the cache
# --------------------------------------------------------------------------------------------------------------


def _small_grid(formats=("json", "text")):
    kb = load_knowledge()
    tasks = make_tasks(["qa", "summary"], kb)
    docs = generate_documents(kb, ["discharge_letter"], ["de", "en"], 2, seed=0)
    return build_grid(docs, tasks, list(formats), load_schemas(tasks))


def test_parse_json_reply():
    assert parse_json_reply('```json\n{"a": 1}\n```') == ({"a": 1}, None)
    assert parse_json_reply("[1]")[0] is None and parse_json_reply("{'a': 1}")[0] is None


def test_unparseable_replies_are_retried_then_counted(tmp_path):
    examples = _small_grid()

    def reply(messages):  # broken JSON first; after one correction valid JSON — except for German prompts
        retried = len(messages) > 2
        if "JSON" not in messages[1]["content"]:
            return "A short answer."
        if retried and "Antworte" not in messages[1]["content"]:
            return '{"answer": "x"}'
        return "{not json"

    llm = LLM(FunctionBackend(reply, name="fake", model="m"), tmp_path / "cache")
    stats = llm_answers(examples, llm, parse_retries=2)
    json_de = [e for e in examples if e.format == "json" and e.prompt_lang == "de"]
    json_en = [e for e in examples if e.format == "json" and e.prompt_lang == "en"]
    assert stats["failed"] == len(json_de) and all(e.status == "failed" and e.attempts == 3 for e in json_de)
    assert all(e.status == "ok" and e.attempts == 2 for e in json_en)
    assert stats["calls"] == len(examples) + 2 * len(json_de) + len(json_en)
    # resume: a new LLM on the same cache repeats no call
    again = _small_grid()
    llm2 = LLM(FunctionBackend(lambda m: pytest.fail("called again"), name="fake", model="m"), tmp_path / "cache")
    stats2 = llm_answers(again, llm2, parse_retries=2)
    assert stats2["calls"] == 0 and [e.answer for e in again] == [e.answer for e in examples]


def test_openai_teacher_against_transformers_serve(served_model, tmp_path):
    params = SynthesizeParams(teacher="openai", base_url=served_model["base_url"], model=served_model["model"],
                              max_new_tokens=8, concurrency=2, parse_retries=1, timeout_s=120, max_retries=2)
    examples = _small_grid()
    half = len(examples) // 2
    # a run killed halfway: only the first half was asked
    llm = recipe.make_teacher_llm(params, tmp_path / "cache")
    first = llm_answers(examples[:half], llm, params.parse_retries)
    llm.close()
    # the tiny random model writes gibberish (or nothing): no JSON reply parses, so each is retried once and then
    # counted as a failure; an empty text reply is retried the same way
    json_first = [e for e in examples[:half] if e.format == "json"]
    assert json_first and all(e.status == "failed" and e.attempts == 2 for e in json_first)
    assert first["failed"] == sum(e.status == "failed" for e in examples[:half])
    assert all(e.attempts == 2 for e in examples[:half] if e.status == "failed")
    assert first["calls"] == sum(e.attempts for e in examples[:half])
    rerun = _small_grid()
    llm = recipe.make_teacher_llm(params, tmp_path / "cache")
    second = llm_answers(rerun, llm, params.parse_retries)
    llm.close()
    # the rerun asks what the killed run had not, and asks again where it got no usable reply (unusable replies are
    # never final in the cache); usable ones are not asked again (see the function-backend test above)
    assert second["calls"] == sum(e.attempts for e in rerun[half:]) + sum(
        e.attempts for e in rerun[:half] if e.status == "failed")
    assert llm.stats["cached"] == sum(e.attempts for e in examples[:half] if e.status == "ok")
    assert [(e.answer, e.status) for e in rerun[:half]] == [(e.answer, e.status) for e in examples[:half]]
    assert all(e.status == "failed" for e in rerun if e.format == "json")


# --------------------------------------------------------------------------------------------------------------
# Bad input: clear errors before any generation
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("tasks", ["qa", "diagnose"], "unknown task.*'diagnose'.*allowed: qa, extract"),
    ("doc_types", ["x-ray"], "unknown document type.*'x-ray'"),
    ("tasks", [], "at least 1 item"),
    ("languages", [], "at least 1 item"),
    ("formats", ["xml"], "'text' or 'json'"),
    ("rejection_kinds", ["rude"], "unknown rejection kind"),
])
def test_bad_grid_parameters(field, value, message):
    with pytest.raises(ValidationError, match=message):
        SynthesizeParams(**{field: value})


def test_bad_profile_names_step_and_field():
    with pytest.raises(ProfileError, match=r"step synthesize: field 'doc_types' has bad value \['memo'\]"):
        parse_profile({"steps": {"synthesize": {"doc_types": ["memo"]}}}, "x.yaml")


def test_teacher_needs_model_and_url():
    with pytest.raises(ValidationError, match="needs model"):
        SynthesizeParams(teacher="openai", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValidationError, match="needs base_url"):
        SynthesizeParams(teacher="openai", model="m")


def test_a_schema_that_does_not_parse_fails_before_generation(tmp_path, monkeypatch):
    broken = tmp_path / "qa.schema.json"
    broken.write_text('{"type": "object",\n "properties": {"answer": }\n}')
    not_a_schema = tmp_path / "summary.schema.json"
    not_a_schema.write_text('{"type": "objekt"}')
    monkeypatch.setattr(recipe, "generate_documents", lambda *a, **k: pytest.fail("generation started"))
    with pytest.raises(SchemaFileError, match=r"task qa: schema file .*qa.schema.json:2: not valid JSON"):
        recipe.setup(SynthesizeParams(schema_files={"qa": str(broken)}), seed=0)
    with pytest.raises(SchemaFileError, match=r"task summary: .*not a valid JSON Schema"):
        recipe.setup(SynthesizeParams(schema_files={"summary": str(not_a_schema)}), seed=0)
    with pytest.raises(ValidationError, match="unknown task in schema_files"):
        SynthesizeParams(schema_files={"diagnose": str(broken)})


def test_fault_injection_is_recorded_and_rates_are_respected():
    kb = load_knowledge()
    tasks = make_tasks(list(TASK_NAMES), kb)
    examples = build_grid(_docs(3), tasks, ["text", "json"], load_schemas(tasks))
    from medslm.synthesize.teachers import programmatic_answers

    rates = {"verbose": 0.5}
    out = programmatic_answers(examples, tasks, kb, rates, seed=0)
    verbose = [e for e in out if e.faults == ["verbose"]]
    text = [e for e in out if e.format == "text"]
    assert 0.35 <= len(verbose) / len(text) <= 0.65
    assert all(e.format == "text" and e.answer != e.reference for e in verbose)
    assert all(e.answer == e.reference for e in out if not e.faults)


# --------------------------------------------------------------------------------------------------------------
# Judge and the model's own answers as rejected
# --------------------------------------------------------------------------------------------------------------


def test_llm_judge_scores_are_parsed_and_unparseable_ones_counted(tmp_path):
    from medslm.synthesize.funnel import apply_filters

    params = SynthesizeParams(**SMALL)
    synth = recipe.setup(params, seed=0)
    recipe.teach(synth, params)
    seen = []

    def judge(messages):  # a judge that fails qa answers, cannot be parsed on summaries, passes the rest
        content = messages[-1]["content"]
        seen.append(content)
        if "Frage:" in content or "Question:" in content:
            return "The facts differ.\nScore: 2"
        return "no idea" if "one sentence" in content or "einem Satz" in content else "Score: **5**"

    funnel = apply_filters(synth.examples, params, synth.tasks, synth.schemas, None,
                           LLM(FunctionBackend(judge, name="judge", model="fake"), tmp_path / "judge"))
    survivors = [e for e in synth.examples if e.verdicts["dedup"] == "pass"]
    assert len(seen) == len(survivors)
    assert all(e.verdicts["judge"] == "removed" for e in survivors if e.task == "qa")
    assert all(e.verdicts["judge"] == "n/a" for e in survivors if e.task == "summary")
    assert funnel["judge_unparseable"] == sum(e.task == "summary" for e in survivors) > 0


def test_model_answers_as_rejected(tiny_model_dir, tmp_path):
    from medslm.synthesize.pairs import model_pairs

    params = SynthesizeParams(**SMALL, model_rejections=4, max_new_tokens=16)
    synth = recipe.setup(params, seed=0)
    recipe.teach(synth, params)
    recipe.filter_examples(synth, params)
    kept = [e for e in synth.kept() if e.duplicate_of is None]
    fake = LLM(FunctionBackend(lambda m: "Keine Ahnung.", name="fake", model="m"))
    pairs = model_pairs(kept, fake, limit=5)
    assert len(pairs) == 5 and {p.kind for p in pairs} == {"model_answer"}
    assert all(p.rejected == "Keine Ahnung." and p.example.answer != p.rejected for p in pairs)
    # the real path: the tiny model through llm.py transformers (its answers are whatever it writes)
    pairs = recipe.make_pairs(synth, params, model=tiny_model_dir, cache_dir=tmp_path / "cache", device="cpu")
    model_made = [p for p in pairs if p.kind == "model_answer"]
    assert len(model_made) <= 4 and all(p.rejected and p.rejected != p.example.answer for p in model_made)
    assert (tmp_path / "cache" / "model" / "replies.jsonl").exists()
    with pytest.raises(ValueError, match="needs a model"):
        recipe.make_pairs(synth, params, model=None)


def test_a_german_only_run_still_catches_english(tmp_path):
    params = SynthesizeParams(languages=["de"], tasks=["summary", "simplify"], examples_per_cell=3,
                              wrong_language_rate=0.3, mixed_language_rate=0.3)
    synth = recipe.setup(params, seed=0)
    recipe.teach(synth, params)
    recipe.filter_examples(synth, params)
    bad = [e for e in synth.examples if {"wrong_language", "mixed_language"} & set(e.faults)]
    assert len(bad) >= 30
    assert sum(e.verdicts["language"] == "removed" for e in bad) / len(bad) >= 0.95


def test_funnel_figure_shows_every_filter(smoke, tmp_path):
    from medslm import plots

    fig = plots.plot_synthesis_funnel(smoke["synth"].funnel)
    path = plots.save_figure(fig, tmp_path / "funnel.png")
    assert path.stat().st_size > 1000 and fig.axes[0].get_legend() is not None


def test_the_split_never_holds_out_every_document_of_a_small_grid():
    """Found by running laptop.yaml: one document per (type, language) put every document in the test split."""
    singles = _docs(1)  # 10 types × 2 languages, one document each
    held = split_documents(singles, 0.1, seed=0)
    assert len(held) == 2 and held == split_documents(singles, 0.1, seed=0)  # ceil(0.1 × 20) of the pooled singles
    pairs = _docs(2)
    held = split_documents(pairs, 0.5, seed=0)
    by_group = {}
    for doc in pairs:
        by_group.setdefault((doc.doc_type, doc.lang), []).append(doc.id in held)
    assert all(flags.count(True) == 1 for flags in by_group.values())  # ceil(0.5 × 2) = 1, never the whole group
    sixteen = _docs(16)
    assert len(split_documents(sixteen, 0.1, seed=0)) == 20 * 2  # ceil(1.6) per group, as before
    assert split_documents(sixteen, 0.0) == set() and len(split_documents(singles[:1], 0.5)) == 0
