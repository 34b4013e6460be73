"""Pairwise judge: position swap, bootstrap coverage, length control, the toy world's reference judge."""

import numpy as np
import pytest

from medslm.evaluate.intervals import bootstrap_interval
from medslm.evaluate.judge import (
    PairOutcome,
    combine,
    judge_messages,
    judge_pairs,
    length_controlled_win_rate,
    parse_verdict,
    reference_judge,
    win_rates,
)
from medslm.llm import LLM, FunctionBackend

PAIRS = [{"id": f"p{i}", "question": "Wofür wird Metformin eingesetzt?", "lang": "de", "reference": "Typ-2-Diabetes",
          "model": "Metformin wird gegen Typ-2-Diabetes eingesetzt.", "baseline": "Gegen Kopfschmerzen."}
         for i in range(6)]


def test_parse_verdict_and_combine():
    assert parse_verdict("B") == "B" and parse_verdict("Answer A is better") == "A"
    assert parse_verdict("Tie.") == "tie" and parse_verdict("keine Ahnung") is None
    assert combine("A", "B") == 1.0 and combine("B", "A") == 0.0  # consistent across orders
    assert combine("A", "A") == 0.5 and combine(None, "B") == 0.5  # position bias / unparseable → tie


def test_always_first_judge_gives_only_ties():
    llm = LLM(FunctionBackend(lambda messages: "A", name="always-first", model="fake"))
    outcomes = judge_pairs(llm, PAIRS)
    assert [o.score for o in outcomes] == [0.5] * len(PAIRS)
    rates = win_rates(outcomes, n_boot=200)
    assert rates["tie"] == 1.0 and rates["win"] == 0.0 and rates["win_rate"] == 0.5
    assert llm.stats["calls"] == 2 * len(PAIRS)  # both orders asked


def test_judge_sees_both_orders():
    llm = LLM(FunctionBackend(reference_judge, name="reference-judge", model="toyworld"))
    outcomes = judge_pairs(llm, PAIRS)
    assert all(o.verdict_model_first == "A" and o.verdict_model_second == "B" and o.score == 1.0 for o in outcomes)


def test_reference_judge_rules():
    def verdict(a, b, lang="en", reference="type 2 diabetes"):
        return reference_judge(judge_messages("What is metformin used for?", a, b, lang, reference))

    right, wrong = "Metformin treats type 2 diabetes.", "Metformin treats headaches and many other things."
    assert verdict(wrong, right) == "B"  # the right fact beats length
    german = "Metformin behandelt type 2 diabetes."
    assert verdict(german, right) == "B"  # equally correct: the question's language wins
    assert verdict(german, right, lang="de") == "A"
    assert verdict(right + " It is taken with meals every day.", right) == "B"  # padding costs correctness
    assert verdict(right, right) == "tie"
    # a truncated or empty answer does not win by being short (the first judge preferred the shorter answer)
    assert verdict("Metformin treats type", right) == "B" and verdict("", right) == "B"
    # … also when neither has the whole reference (answers seen in a smoke run; the first judge chose the truncated)
    reference = "Referral letter about a patient with bipolar disorder and diabetes mellitus, treated with Lithium."
    partly_right = "Referral letter about a patient with bipolar disorder and appendicitis, treated with Lithium."
    assert verdict("Referral letter about a patient with .", partly_right, reference=reference) == "B"
    # within the correctness tie, the answer closer to the reference's length wins
    reference = "Metformin lowers blood sugar in type 2 diabetes"
    close, long = "metformin lowers blood sugar in type 2 diabetes.", reference + " quickly"  # F1 1.00 and 0.94
    assert verdict(long, close, reference=reference) == "B" and verdict(close, long, reference=reference) == "A"


def test_bootstrap_interval_covers_true_rate():
    rng = np.random.default_rng(0)
    true_rate, covered = 0.6, 0
    for _ in range(100):
        scores = (rng.random(200) < true_rate).astype(float)
        low, high = bootstrap_interval(scores, n_boot=1000, seed=int(rng.integers(1 << 30)))
        covered += low <= true_rate <= high
    assert covered >= 88  # nominal 95 %; 88 leaves room for the percentile method's slight undercoverage at n=200
    # negative control: intervals from a rate of 0.45 (≈ 4 standard errors away at n=200) exclude 0.6
    excluded = sum(bootstrap_interval((rng.random(200) < 0.45).astype(float), n_boot=500)[1] < true_rate
                   for _ in range(20))
    assert excluded >= 18


def _synthetic(n, quality, length_effect, seed):
    rng = np.random.default_rng(seed)
    diffs = rng.normal(200.0, 300.0, n)  # the model answers ~200 characters longer on average
    logit = np.log(quality / (1 - quality)) + length_effect * np.tanh(diffs / diffs.std())
    scores = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    ties = rng.random(n) < 0.1
    scores[ties] = 0.5
    return scores, diffs


def test_length_control_removes_injected_length_bias():
    scores, diffs = _synthetic(4000, quality=0.5, length_effect=2.0, seed=1)
    assert scores.mean() > 0.6  # the judge rewards length
    assert length_controlled_win_rate(scores, diffs) == pytest.approx(0.5, abs=0.04)
    scores, diffs = _synthetic(4000, quality=0.7, length_effect=0.0, seed=2)  # no bias: LC keeps the real rate
    assert length_controlled_win_rate(scores, diffs) == pytest.approx(scores.mean(), abs=0.02)
    assert abs(length_controlled_win_rate(scores, diffs) - 0.7) < 0.04


def test_win_rates_report():
    outcomes = [PairOutcome(f"i{i}", s, None, None, d) for i, (s, d) in
                enumerate(zip(*_synthetic(300, quality=0.65, length_effect=0.0, seed=3), strict=True))]
    rates = win_rates(outcomes, n_boot=300)
    assert rates["win"] + rates["tie"] + rates["loss"] == pytest.approx(1.0)
    assert rates["win_rate_ci95"][0] < rates["win_rate"] < rates["win_rate_ci95"][1]
    assert rates["lc_win_rate_ci95"][0] < rates["lc_win_rate"] < rates["lc_win_rate_ci95"][1]
