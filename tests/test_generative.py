"""Generative scores: exact match, token F1, ROUGE-L (rouge-score), JSON validity and field accuracy."""

import pytest

from medslm.evaluate.generative import (
    exact_match,
    json_field_accuracy,
    json_valid,
    rouge_l,
    score_task,
    token_f1,
)

SCHEMA = {"type": "object", "required": ["drug", "dose_mg"],
          "properties": {"drug": {"type": "string"}, "dose_mg": {"type": "number"}}}


def test_exact_match_normalises_case_punctuation_articles():
    assert exact_match("The Metformin.", "metformin") == 1.0
    assert exact_match("Das Herz!", "herz") == 1.0
    assert exact_match("Metformin 500", "metformin") == 0.0


def test_token_f1_by_hand():
    # pred tokens: type 2 diabetes mellitus (4); ref: type 2 diabetes (3); overlap 3 → P 3/4, R 1 → F1 6/7
    assert token_f1("Type 2 diabetes mellitus", "type 2 diabetes") == pytest.approx(6 / 7)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_rouge_l_by_hand_and_umlauts():
    # LCS("a b c d", "a c d e") = 3 → P 3/4, R 3/4 → F 0.75
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("Blutdruck über 140", "Blutdruck über 140") == 1.0
    assert rouge_l("über", "uber") == 0.0  # umlauts are letters, not dropped


def test_json_validity_against_schema():
    assert json_valid('{"drug": "Metformin", "dose_mg": 500}', SCHEMA) == 1.0
    assert json_valid('```json\n{"drug": "Metformin", "dose_mg": 500}\n```', SCHEMA) == 1.0
    assert json_valid('{"drug": "Metformin", "dose_mg": "500"}', SCHEMA) == 0.0  # wrong type
    assert json_valid('{"drug": "Metformin"', SCHEMA) == 0.0  # broken JSON
    assert json_valid("[1, 2]") == 0.0  # not an object


def test_json_field_accuracy():
    ref = {"drug": "Metformin", "dose_mg": 500, "route": "oral"}
    assert json_field_accuracy('{"drug": "metformin", "dose_mg": 500, "route": "iv"}', ref) == pytest.approx(2 / 3)
    assert json_field_accuracy("not json", ref) == 0.0


def test_score_task_groups_and_picks_scores():
    records = [
        {"task": "qa", "prediction": "Metformin", "reference": "metformin"},
        {"task": "qa", "prediction": "Insulin", "reference": "metformin"},
        {"task": "extract", "prediction": '{"drug": "Metformin", "dose_mg": 500}',
         "reference": {"drug": "Metformin", "dose_mg": 500}, "schema": SCHEMA},
        {"task": "extract", "prediction": '{"drug": "Metformin"}',
         "reference": {"drug": "Metformin", "dose_mg": 500}, "schema": SCHEMA},
    ]
    out = score_task(records)
    assert out["qa"] == {"exact_match": 0.5, "rouge_l": 0.5, "token_f1": 0.5, "n": 2}
    assert out["extract"] == {"json_field_accuracy": 0.75, "json_valid": 0.5, "n": 2}
