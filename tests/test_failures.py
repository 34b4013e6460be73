"""Failure detectors of 08 against hand-written clinical answers and crafted strings with known labels.

Language: tests/data/clinical_language.yaml (45 German, 45 English clinical sentences; 40 German answers with an
English sentence or phrase inside) and the toy world's bilingual fact sentences; precision and recall at the
sentence level, target ≥ 0.95 (issue 12), fixed before measuring.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from medslm.failures import (
    FailureAnalysisParams,
    FailureItem,
    analyse_failures,
    check_degeneration,
    check_format,
    check_language,
    check_verbosity,
    count_tokens,
    distinct_n,
    forgetting_table,
    language_detector,
    length_bias,
    read_items,
    repeated_ngram_share,
    restored_share,
    split_sentences,
)

DATA = yaml.safe_load((Path(__file__).parent / "data" / "clinical_language.yaml").read_text(encoding="utf-8"))
TARGET = 0.95


@pytest.fixture(scope="module")
def detector():
    return language_detector(("de", "en"))


def pure_answers() -> list[tuple[str, list[tuple[bool, str]]]]:
    """Answers of three sentences: clean German/English ones, and each with its middle sentence swapped for the
    other language. Gold per sentence: True = not in the expected language."""
    german, english = DATA["german"], DATA["english"]
    out = []
    for i in range(0, 45, 3):
        out.append(("de", [(False, s) for s in german[i:i + 3]]))
        out.append(("en", [(False, s) for s in english[i:i + 3]]))
        out.append(("de", [(False, german[i]), (True, english[i + 1]), (False, german[i + 2])]))
        out.append(("en", [(False, english[i]), (True, german[i + 1]), (False, english[i + 2])]))
    return out


def mixed_answers() -> list[tuple[str, list[tuple[bool, str]]]]:
    """The hand-written German answers with an English sentence (en) or phrase (phrase) inside."""
    return [("de", [(tag != "de", text) for tag, text in (s.split(": ", 1) for s in answer)])
            for answer in DATA["mixed"]]


def sentence_scores(answers, detector, **options) -> dict[str, float]:
    """Precision and recall of ``check_language`` per gold sentence: a sentence counts as flagged when a foreign
    span of the check overlaps it by ≥ 3 characters (independent of how the splitter cut the answer)."""
    tp = fp = fn = 0
    for expected, sentences in answers:
        text = " ".join(s for _, s in sentences)
        spans = check_language(text, expected, detector, **options).spans
        pos = 0
        for gold, sentence in sentences:
            start = text.index(sentence, pos)
            end = pos = start + len(sentence)
            flagged = any(min(end, s.end) - max(start, s.start) >= 3 for s in spans)
            tp += flagged and gold
            fp += flagged and not gold
            fn += gold and not flagged
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "positives": tp + fn}


def test_data_has_enough_sentences():
    assert len(DATA["german"]) >= 40 and len(DATA["english"]) >= 40 and len(DATA["mixed"]) >= 40
    tags = [s.split(": ", 1)[0] for answer in DATA["mixed"] for s in answer]
    assert set(tags) == {"de", "en", "phrase"} and tags.count("phrase") >= 20 and tags.count("en") >= 20


def test_language_german_vs_english_sentences(detector):
    scores = sentence_scores(pure_answers(), detector)
    print("pure German/English answers:", scores)
    assert scores["positives"] == 30
    assert scores["precision"] >= TARGET and scores["recall"] >= TARGET


def test_language_mixed_answers(detector):
    scores = sentence_scores(mixed_answers(), detector)
    print("mixed answers (English sentences and phrases in German):", scores)
    assert scores["positives"] == 40
    assert scores["precision"] >= TARGET and scores["recall"] >= TARGET


def test_phrase_detection_finds_what_sentence_detection_misses(detector):
    phrases = [("de", [(True, s.split(": ", 1)[1])]) for answer in DATA["mixed"] for s in answer
               if s.startswith("phrase:")]
    with_phrases = sentence_scores(phrases, detector)["recall"]
    sentences_only = sentence_scores(phrases, detector, detect_phrases=False)["recall"]
    print(f"recall on German sentences with an English phrase: {with_phrases:.3f} with phrase detection, "
          f"{sentences_only:.3f} per sentence only")
    assert with_phrases >= TARGET and sentences_only < with_phrases


def test_language_toy_world_fact_sentences(detector):
    """Every fact sentence of the toy world, checked in its own language (negative) and in the other (positive)."""
    from medslm.toyworld.knowledge import load_knowledge, render

    answers = []
    for rel in load_knowledge().relations:
        for fact in rel.facts:
            for lang, other in (("de", "en"), ("en", "de")):
                for template in rel.templates[lang]:
                    answers.append((lang, [(False, render(template, fact, lang))]))
                    answers.append((other, [(True, render(template, fact, lang))]))
    scores = sentence_scores(answers, detector)
    print("toy-world fact sentences:", scores)
    assert scores["precision"] >= TARGET and scores["recall"] >= TARGET


def test_negative_control_clean_answers_have_no_language_failure(detector):
    for lang, sentences in (("de", DATA["german"]), ("en", DATA["english"])):
        for i in range(0, len(sentences), 5):
            answer = "\n".join(sentences[i:i + 5])
            check = check_language(answer, lang, detector)
            assert check.spans == [] and check.foreign_words == 0, (answer, check.spans)
            assert check.line_pass is True and check.word_pass is True


def test_lcb_line_and_word_level(detector):
    german, english = DATA["german"], DATA["english"]
    wrong_language = check_language("\n".join(english[:3]), "de", detector)
    assert wrong_language.line_pass is False and wrong_language.word_pass is None  # LCB: words judged after lines
    assert wrong_language.foreign_sentence_share == 1.0 and wrong_language.foreign_word_share == 1.0
    phrase = "Die Nierenfunktion ist stable and within normal limits und muss nicht kontrolliert werden."
    inside = check_language(f"{german[0]}\n{phrase}", "de", detector)
    assert inside.line_pass is True and inside.word_pass is False
    assert [s.kind for s in inside.spans] == ["phrase"] and "within normal limits" in inside.spans[0].text
    assert 0 < inside.foreign_word_share < 0.5
    too_short = check_language("Ja, gerne.", "de", detector)
    assert too_short.line_pass is None and too_short.word_pass is None and too_short.sentences == 0
    script = check_language(f"{german[1]} Der Befund ist 正常 und stabil.", "de", detector)
    assert script.line_pass is True and script.word_pass is False
    assert [(s.kind, s.text) for s in script.spans] == [("script", "正常")]


def test_split_sentences_keeps_abbreviations_and_offsets():
    text = "Z. n. Myokardinfarkt 2019, ca. 3 Jahre her. Kontrolle bei Dr. Müller.\nThe patient is well."
    parts = split_sentences(text, "de")
    assert [s.strip() for _, _, s in parts] == ["Z. n. Myokardinfarkt 2019, ca. 3 Jahre her.",
                                                "Kontrolle bei Dr. Müller.", "The patient is well."]
    assert all(text[start:end] == s for start, end, s in parts)


def test_verbosity_known_ratios():
    reference = " ".join(["wort"] * 10)
    for words, verbose in ((5, False), (10, False), (20, False), (21, True), (35, True)):
        check = check_verbosity(" ".join(["x"] * words), reference, verbose_ratio=2.0)
        assert (check.tokens, check.reference_tokens, check.ratio, check.verbose) == (words, 10, words / 10, verbose)
    assert check_verbosity("etwas", None).ratio is None and not check_verbosity("etwas", "").verbose
    characters = check_verbosity("abcdef", "abc", tokenizer=list)  # a callable tokenizer: characters
    assert characters.ratio == 2.0 and not characters.verbose


def test_count_tokens_with_a_transformers_tokenizer(tiny_tokenizer):
    text = "Metformin is used to treat type 2 diabetes."
    assert count_tokens(text, tiny_tokenizer) == len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])


def test_length_bias_against_an_independent_spearman():
    rng = random.Random(0)
    diffs = [rng.uniform(-200, 200) for _ in range(200)]
    scores = [1.0 if d + rng.gauss(0, 80) > 0 else 0.0 for d in diffs]
    bias = length_bias(scores, diffs, lc_win_rate=0.45)

    import pandas as pd

    expected = np.corrcoef(pd.Series(scores).rank(), pd.Series(diffs).rank())[0, 1]  # Pearson of average ranks
    assert bias.spearman == pytest.approx(expected, abs=1e-9) and bias.spearman > 0.5
    assert bias.win_rate == pytest.approx(np.mean(scores)) and bias.gap == pytest.approx(np.mean(scores) - 0.45)
    unbiased = length_bias([1.0, 0.0, 0.5, 1.0], [5.0, 5.0, 5.0, 5.0])
    assert unbiased.spearman is None and unbiased.gap is None
    with pytest.raises(ValueError, match="0, 0.5 or 1"):
        length_bias([0.7], [3.0])


def test_degeneration_on_crafted_strings():
    loop = "Der Patient ist stabil. " * 6
    check = check_degeneration(loop, repeat_n=4, repetition_threshold=0.3)
    assert check.repetitive and check.top_repeat == ("der patient ist stabil.", 6)
    assert check.repeated_share == pytest.approx(1 - 4 / 21)  # 24 words → 21 four-grams, 4 distinct
    assert distinct_n(["a", "b", "a", "b"], 1) == 0.5 and distinct_n(["a", "b", "a", "b"], 2) == pytest.approx(2 / 3)
    assert distinct_n([], 2) == 1.0 and repeated_ngram_share(["a"], 4) == 0.0
    assert check_degeneration("   ").empty and not check_degeneration("Gut.").empty
    assert check_degeneration("a b c", truncated=True).truncated
    assert check_degeneration("a b c d", max_new_tokens=4).truncated and not check_degeneration("a b c", max_new_tokens=4).truncated


def test_negative_control_clinical_text_is_not_repetitive():
    answers = [" ".join(DATA[lang][i:i + 4]) for lang in ("german", "english") for i in range(0, 44, 4)]
    assert not any(check_degeneration(a).repetitive for a in answers)
    loops = [" ".join([s] * 4) for s in DATA["german"][:10]] + ["und und und und und und und und"]
    assert all(check_degeneration(a).repetitive for a in loops)


SCHEMA = {"type": "object", "required": ["diagnosis", "medication"],
          "properties": {"diagnosis": {"type": "string"}, "medication": {
              "type": "object", "required": ["name", "dose_mg"],
              "properties": {"name": {"type": "string"}, "dose_mg": {"type": "number"}}}}}


@pytest.mark.parametrize("answer, valid, missing, violation", [
    ('{"diagnosis": "Pneumonie", "medication": {"name": "Amoxicillin", "dose_mg": 1000}}', True, [], False),
    ('```json\n{"diagnosis": "Gicht", "medication": {"name": "Allopurinol", "dose_mg": 300}}\n```', True, [], False),
    ('{"diagnosis": "Gicht", "medication": {"name": "Allopurinol"}}', True, ["medication.dose_mg"], True),
    ('{"medication": {"name": "ASS", "dose_mg": 100}}', True, ["diagnosis"], True),
    ('{"diagnosis": "Gicht", "medication": {"name": "Allopurinol", "dose_mg": "300"}}', True, [], True),
    ('{"diagnosis": "Gicht", "medication": {"name": "Allopurinol", "dose_mg": 300},}', False, [], False),
    ("{'diagnosis': 'Gicht'}", False, [], False),
    ('{"diagnosis": "Gicht", "medication": {"name": "Allo', False, [], False),
    ("Die Diagnose ist Gicht.", False, [], False),
    ("", False, [], False),
])
def test_json_format_checks(answer, valid, missing, violation):
    check = check_format(answer, SCHEMA)
    assert (check.valid_json, check.missing_fields, check.schema_violation) == (valid, missing, violation)
    assert (check.error is None) == valid


def test_json_fence_only_when_asked_and_bad_schema_is_named():
    fenced = '```json\n{"diagnosis": "Gicht"}\n```'
    assert check_format(fenced).valid_json and not check_format(fenced, strip_code_fences=False).valid_json
    with pytest.raises(ValueError, match="schema is invalid"):
        check_format("{}", {"type": "objekt"})


def test_forgetting_drops_and_restored_share():
    scores = {"instruct": {"general": 0.90, "chat": 0.80}, "cpt": {"general": 0.60, "chat": 0.70},
              "merge": {"general": 0.80}}
    rows = {(r.variant, r.benchmark): r for r in forgetting_table(scores, "instruct", tolerance=0.02)}
    assert rows["cpt", "general"].drop == pytest.approx(0.30) and rows["cpt", "general"].forgot
    assert rows["cpt", "general"].relative_drop == pytest.approx(1 / 3)
    assert rows["instruct", "chat"].drop == 0 and not rows["instruct", "chat"].forgot
    assert ("merge", "chat") not in rows
    assert restored_share(0.90, 0.60, 0.80) == pytest.approx(2 / 3) and restored_share(0.9, 0.95, 0.9) is None
    with pytest.raises(ValueError, match="reference variant 'base' has no scores.*forgetting_reference"):
        forgetting_table(scores, "base")


def _items() -> list[FailureItem]:
    """Two variants on the same prompts: 'dpo' answers cleanly; 'sft' answers in English, rambles (4 sentences for 1),
    loops (5 × the same sentence, cut off) and breaks JSON."""
    german = DATA["german"]
    items = []
    for i in range(8):
        prompt, reference = f"Frage {i}?", german[i]
        items.append(FailureItem("dpo", "qa", "de", prompt, german[i], reference))
        faulty = {0: DATA["english"][i], 1: " ".join(german[i:i + 4]),
                  2: " ".join([german[i]] * 5)}.get(i % 4, german[i])
        items.append(FailureItem("sft", "qa", "de", prompt, faulty, reference, truncated=(i % 4 == 2)))
    good, bad = '{"diagnosis": "Gicht", "medication": {"name": "Allopurinol", "dose_mg": 300}}', '{"diagnosis": "Gicht",'
    for i in range(4):
        items.append(FailureItem("dpo", "extract", "de", "JSON bitte", good, None, "json", SCHEMA))
        items.append(FailureItem("sft", "extract", "de", "JSON bitte", bad if i < 2 else good, None, "json", SCHEMA))
    return items


def test_analysis_table_and_worst_examples():
    report = analyse_failures(_items(), FailureAnalysisParams(worst_examples=2))
    table = report.table()
    assert list(table.index) == ["dpo", "sft"] and list(table["answers"]) == [12, 12]
    dpo, sft = table.loc["dpo"], table.loc["sft"]
    for column in ("language_mixed", "verbose", "repetitive", "truncated", "invalid_json", "empty"):
        assert dpo[column] == 0, column  # negative control: the clean variant fails nothing
    assert sft["language_mixed"] == 2 / 8 and sft["verbose"] == 4 / 8 and sft["repetitive"] == 2 / 12
    assert sft["truncated"] == 2 / 12 and sft["invalid_json"] == 2 / 4
    per_task = report.table(by=("variant", "task", "prompt_language"))
    assert per_task.loc[("sft", "qa", "de"), "language_mixed"] == 2 / 8
    assert np.isnan(per_task.loc[("sft", "extract", "de"), "language_mixed"])  # JSON answers: no language check
    worst = report.worst("language")
    assert len(worst) == 2 and all(ex.variant == "sft" for ex in worst)
    assert any(DATA["english"][0].rstrip(".") in ex.evidence for ex in worst)
    assert report.worst("invalid_json", k=10)[0].evidence.startswith("not JSON")
    assert report.worst("repetition")[0].evidence.endswith("×5") and report.worst("empty") == []
    with pytest.raises(ValueError, match="unknown failure mode"):
        report.worst("rambling")
    no_reference = analyse_failures([FailureItem("sft", "qa", "de", "?", "Ja, das ist so.", None)]).frame()
    assert np.isnan(no_reference.loc[0, "verbose"]) and np.isnan(no_reference.loc[0, "length_ratio"])
    with pytest.raises(ValueError, match=r"item q7 \(sft/qa\): prompt_language: unknown language code 'xx'"):
        analyse_failures([FailureItem("sft", "qa", "xx", "?", "Ja.", id="q7")])


def test_items_from_jsonl_and_bad_records(tmp_path):
    path = tmp_path / "answers.jsonl"
    good = {"variant": "sft", "task": "qa", "prompt_language": "DE", "prompt": "?", "answer": "Ja.", "reference": "Ja."}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "format": "xml"}) + "\n")
    with pytest.raises(ValueError, match=r"answers.jsonl:2: field 'format' is 'xml'; allowed: text, json"):
        read_items(path)
    path.write_text(json.dumps(good) + "\n")
    assert read_items(path)[0].prompt_language == "de"
    with pytest.raises(ValueError, match="field 'answer' must be a string"):
        FailureItem.from_record({**good, "answer": None}, "x:1")


def test_params_reject_unknown_language():
    with pytest.raises(ValueError, match="unknown language code 'xx'; lingua knows: af"):
        FailureAnalysisParams(languages=["de", "xx"])
    assert FailureAnalysisParams(languages=["DE", "en", "de"]).languages == ["de", "en"]


def test_plot_failure_rates_shows_the_table():
    from medslm.plots import plot_failure_rates

    table = analyse_failures(_items()).table()
    rows = table.reset_index().to_dict("records")
    fig = plot_failure_rates(rows, ["language_mixed", "invalid_json"])
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["language_mixed", "invalid_json"]
    assert [p.get_height() for p in axes[0].patches] == pytest.approx(list(table["language_mixed"]))
    nan_rows = [{**r, "invalid_json": float("nan")} for r in rows]
    labels = [t.get_text() for t in plot_failure_rates(nan_rows, ["invalid_json"]).axes[0].texts]
    assert labels == ["n/a", "n/a"]
    with pytest.raises(ValueError, match="no row has column"):
        plot_failure_rates(rows, ["rambling"])


def test_detector_built_once_per_language_set():
    assert language_detector(["en", "DE"]) is language_detector(("de", "en"))
    assert language_detector(("de", "en", "fr")) is not language_detector(("de", "en"))
