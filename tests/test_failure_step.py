"""08_failure_analysis: detectors against 05_synthesize's injected faults (known ground truth), the upstream check
against 07's files and the manifest, and the step end to end on 07-shaped files."""

from __future__ import annotations

import pytest

from medslm.failures.formats import check_format
from medslm.failures.language import check_language, language_detector, split_sentences
from medslm.failures.step import FailureRecipe, UpstreamError
from medslm.failures.verbosity import check_verbosity
from medslm.params import FailureAnalysisParams, RunParams, SynthesizeParams
from medslm.rundir import RunDir, sha256_file, write_json, write_jsonl

TARGET = 0.95  # the acceptance figure, fixed before measuring


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    """05_synthesize's examples with high fault rates: every example knows which faults it carries."""
    from medslm.synthesize import recipe

    params = SynthesizeParams(examples_per_cell=2, mixed_language_rate=0.3, wrong_language_rate=0.15,
                              verbose_rate=0.2, invalid_json_rate=0.3, wrong_fact_rate=0.0, near_duplicate_rate=0.0)
    synth = recipe.setup(params, seed=3)
    recipe.teach(synth, params, None)
    return [e for e in synth.examples if e.answer is not None]


def _sentence_truth(example) -> list[tuple[str, bool]]:
    """(sentence, foreign?) of an answer: a wrong-language answer is foreign throughout; in a mixed answer the
    sentences that are not in the clean reference are the injected foreign ones; a clean answer has none."""
    sentences = [s for _, _, s in split_sentences(example.answer, example.answer_lang)]
    if "wrong_language" in example.faults:
        return [(s, True) for s in sentences]
    if "mixed_language" in example.faults:
        return [(s, s.strip() not in example.reference) for s in sentences]
    return [(s, False) for s in sentences]


def test_language_mixing_detection_on_injected_faults(injected):
    text = [e for e in injected if e.format == "text" and set(e.faults) <= {"mixed_language", "wrong_language"}]
    detector = language_detector(["de", "en"])
    tp = fp = fn = 0
    for example in text:
        check = check_language(example.answer, example.answer_lang, detector)
        flagged = [span.text for span in check.spans]
        for sentence, foreign in _sentence_truth(example):
            if len(sentence.split()) < 3:
                continue  # the detector does not judge sentences this short
            hit = any(f in sentence or sentence in f for f in flagged)
            tp, fp, fn = tp + (hit and foreign), fp + (hit and not foreign), fn + (foreign and not hit)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    print(f"sentence level on 05's faults: precision {precision:.3f}, recall {recall:.3f}, {tp + fn} foreign sentences")
    assert tp + fn >= 40  # enough injected sentences to measure
    assert precision >= TARGET and recall >= TARGET


def test_verbosity_and_json_detectors_recall_injected_faults(injected):
    verbose = [e for e in injected if "verbose" in e.faults and e.format == "text"]
    broken = [e for e in injected if "invalid_json" in e.faults]
    clean_json = [e for e in injected if e.format == "json" and not e.faults]
    assert len(verbose) >= 20 and len(broken) >= 20 and clean_json
    verbose_recall = sum(check_verbosity(e.answer, e.reference).verbose for e in verbose) / len(verbose)
    json_recall = sum(not check_format(e.answer).valid_json for e in broken) / len(broken)
    print(f"recall on 05's faults: verbosity {verbose_recall:.3f} ({len(verbose)}), invalid JSON {json_recall:.3f}")
    assert verbose_recall >= TARGET and json_recall >= TARGET
    assert all(check_format(e.answer).valid_json for e in clean_json)  # negative control


def _fake_07(run: RunDir) -> None:
    """07-shaped files: a table and per-variant answers (German prompts)."""
    write_json(run.evaluate.metrics, {"step": "evaluate"})
    write_json(run.evaluate.table, [
        {"variant": "instruct", "status": "ok", "toy_probes_general": 0.95, "toy_probes_chat": 0.9, "toy_probes_medical": 0.3},
        {"variant": "cpt", "status": "ok", "toy_probes_general": 0.8, "toy_probes_chat": 0.7, "toy_probes_medical": 0.7},
        {"variant": "merge", "status": "ok", "toy_probes_general": 0.88, "toy_probes_chat": 0.8, "toy_probes_medical": 0.65},
    ])
    german = "Der Patient erhält Metformin gegen Diabetes mellitus Typ 2 und wird morgen entlassen."
    mixed = german + " The patient should also avoid alcohol during the whole treatment period."
    for variant, answer in (("sft", mixed), ("dpo", german)):
        write_jsonl(run.evaluate.items / f"{variant}.generations.jsonl", [
            {"variant": variant, "id": str(i), "task": "summary", "format": "text", "prompt_language": "de",
             "answer_language": "de", "prompt": "Fasse zusammen.", "answer": answer, "reference": german,
             "truncated": False} for i in range(4)])


def test_the_step_tells_the_seeds_story_from_07s_files(tmp_path):
    run = RunDir(tmp_path / "run")
    _fake_07(run)
    recipe = FailureRecipe(FailureAnalysisParams(), run.path, RunParams())
    metrics = recipe.run()
    story = metrics["story"]
    assert story["cpt_forgets_general"]["holds"] and story["merge_restores_general"]["holds"]
    assert story["merge_restores_general"]["restored_share"] == pytest.approx((0.88 - 0.8) / (0.95 - 0.8))
    assert story["dpo_cuts_language_mixed"] == {"sft": 1.0, "dpo": 0.0, "holds": True}
    assert metrics["worst"]["language"][0]["variant"] == "sft"  # the evidence points at the mixed answers
    assert (run.step("failure_analysis").metrics).is_file()


def test_missing_or_foreign_07_files_say_which_step_to_run(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(UpstreamError, match="run 07_evaluate first"):
        FailureRecipe(FailureAnalysisParams(), run.path).load()
    _fake_07(run)
    sft, dpo = (run.evaluate.items / f"{v}.generations.jsonl" for v in ("sft", "dpo"))
    recorded = {"path": str(sft.relative_to(run.path)), "sha256": sha256_file(sft), "bytes": 1}
    run.update_step("evaluate", status="done", artifacts=[recorded])
    with pytest.raises(UpstreamError, match="dpo.generations.jsonl is not among the files 07_evaluate"):
        FailureRecipe(FailureAnalysisParams(), run.path).load()
    run.update_step("evaluate", artifacts=[{**recorded, "sha256": "0" * 64},
                                           {"path": str(dpo.relative_to(run.path)), "sha256": sha256_file(dpo)}])
    with pytest.raises(UpstreamError, match="sft.generations.jsonl changed after 07_evaluate wrote it"):
        FailureRecipe(FailureAnalysisParams(), run.path).load()
    run.update_step("evaluate", artifacts=[recorded, {"path": str(dpo.relative_to(run.path)), "sha256": sha256_file(dpo)}])
    assert len(FailureRecipe(FailureAnalysisParams(), run.path).load()) == 8  # this run's files: accepted
