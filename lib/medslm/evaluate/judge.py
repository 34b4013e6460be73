"""Pairwise win-rates with an LLM judge: both orders asked, win/tie/loss with bootstrap intervals, and a
length-controlled win-rate.

* The judge is any :class:`medslm.llm.LLM` (transformers, OpenAI-compatible server, or a function backend). It
  sees the question, optionally a reference answer, and two answers labelled A and B, in the run's language,
  and replies ``A``, ``B`` or ``tie``.
* Position swap: every pair is asked twice, the model's answer first and then second. The model wins only if
  both verdicts prefer it, loses only if both prefer the baseline; disagreement (position bias) or an
  unparseable reply is a tie. An always-first judge therefore yields only ties.
* ``win_rate`` = (wins + ties / 2) / n, with percentile-bootstrap 95 % intervals over items.
* Length control (AlpacaEval-LC, Dubois et al. 2024, reduced to its length term): a logistic regression of the
  outcome on ``tanh(length difference / its std)``, ties split into half a win and half a loss
  (scikit-learn, unpenalised); the length-controlled win-rate is the fitted probability at zero difference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medslm.evaluate.generative import token_f1
from medslm.evaluate.intervals import bootstrap_interval

PROMPTS = {
    "en": {
        "system": "You are a careful medical expert. Compare two answers to the same question and decide which "
                  "is better: correct, in the language of the question, and concise.",
        "reference": "Reference answer:\n{reference}\n\n",
        "user": "Question:\n{question}\n\n{reference}[Answer A]\n{a}\n[End of A]\n\n[Answer B]\n{b}\n[End of B]\n\n"
                "Which answer is better? Reply with exactly one word: A, B or tie.",
    },
    "de": {
        "system": "Du bist eine sorgfältige medizinische Expertin. Vergleiche zwei Antworten auf dieselbe Frage und "
                  "entscheide, welche besser ist: richtig, in der Sprache der Frage und knapp.",
        "reference": "Referenzantwort:\n{reference}\n\n",
        "user": "Frage:\n{question}\n\n{reference}[Answer A]\n{a}\n[End of A]\n\n[Answer B]\n{b}\n[End of B]\n\n"
                "Welche Antwort ist besser? Antworte mit genau einem Wort: A, B oder tie.",
    },
}
_VERDICT = re.compile(r"\b(A|B|tie|unentschieden)\b", re.IGNORECASE)


def judge_messages(question: str, answer_a: str, answer_b: str, lang: str = "en",
                   reference: str | None = None) -> list[dict[str, str]]:
    """The judge's chat prompt in ``lang`` (en/de)."""
    if lang not in PROMPTS:
        raise ValueError(f"judge language {lang!r} not supported; allowed: {sorted(PROMPTS)}")
    prompt = PROMPTS[lang]
    ref = prompt["reference"].format(reference=reference) if reference else ""
    return [{"role": "system", "content": prompt["system"]},
            {"role": "user", "content": prompt["user"].format(question=question, reference=ref, a=answer_a,
                                                              b=answer_b)}]


def parse_verdict(reply: str) -> str | None:
    """``"A"``, ``"B"``, ``"tie"`` from the first verdict word of a reply; None if there is none."""
    match = _VERDICT.search(reply or "")
    if not match:
        return None
    word = match.group(1).lower()
    return "tie" if word in ("tie", "unentschieden") else word.upper()


@dataclass
class PairOutcome:
    """One judged pair: ``score`` 1 (model wins), 0.5 (tie), 0 (loss), the two verdicts and the length difference
    (model − baseline, characters)."""

    id: str
    score: float
    verdict_model_first: str | None
    verdict_model_second: str | None
    length_diff: float

    def record(self) -> dict[str, Any]:
        return dict(self.__dict__)


def combine(verdict_model_first: str | None, verdict_model_second: str | None) -> float:
    """Score of the model from the two orders: both prefer it → 1, both prefer the baseline → 0, otherwise 0.5."""
    model_pref = {"A": 1.0, "B": 0.0}.get(verdict_model_first or "", 0.5)
    swapped_pref = {"B": 1.0, "A": 0.0}.get(verdict_model_second or "", 0.5)
    return model_pref if model_pref == swapped_pref else 0.5


def judge_pairs(llm: Any, pairs: Sequence[dict[str, Any]], progress: bool = False) -> list[PairOutcome]:
    """Judge ``pairs`` (``id``, ``question``, ``model``, ``baseline``, optional ``lang`` and ``reference``) in both
    orders with ``llm`` (a :class:`medslm.llm.LLM`)."""
    prompts, meta = [], []
    for pair in pairs:
        lang, ref = pair.get("lang", "en"), pair.get("reference")
        prompts.append(judge_messages(pair["question"], pair["model"], pair["baseline"], lang, ref))
        prompts.append(judge_messages(pair["question"], pair["baseline"], pair["model"], lang, ref))
        meta += [{"id": pair.get("id", ""), "order": "model_first"}, {"id": pair.get("id", ""), "order": "model_second"}]
    replies = llm.generate(prompts, meta=meta, progress=progress, desc="judge")
    out = []
    for i, pair in enumerate(pairs):
        first, second = parse_verdict(replies[2 * i]), parse_verdict(replies[2 * i + 1])
        out.append(PairOutcome(str(pair.get("id", i)), combine(first, second), first, second,
                               float(len(pair["model"]) - len(pair["baseline"]))))
    return out


def length_controlled_win_rate(scores: Sequence[float], length_diffs: Sequence[float]) -> float:
    """P(model preferred) at zero length difference from a logistic fit on tanh(diff / std(diff))."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(scores, dtype=float)
    diffs = np.asarray(length_diffs, dtype=float)
    scale = diffs.std() or 1.0
    x = np.tanh(diffs / scale)[:, None]
    # each item is a win with weight y and a loss with weight 1 − y (ties: half and half)
    features = np.concatenate([x, x])
    labels = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    weights = np.concatenate([y, 1 - y])
    if weights[labels == 1].sum() == 0 or weights[labels == 0].sum() == 0:
        return float(y.mean())
    model = LogisticRegression(C=np.inf).fit(features, labels, sample_weight=weights)  # unpenalised
    return float(1 / (1 + np.exp(-model.intercept_[0])))


def win_rates(outcomes: Sequence[PairOutcome], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """win/tie/loss shares, ``win_rate`` (ties count half) and ``lc_win_rate``, each with a bootstrap 95 % interval."""
    scores = np.array([o.score for o in outcomes], dtype=float)
    diffs = np.array([o.length_diff for o in outcomes], dtype=float)
    if len(scores) == 0:
        raise ValueError("win_rates needs at least one judged pair")
    out: dict[str, Any] = {"n": len(scores)}
    for name, values in (("win", scores == 1.0), ("tie", scores == 0.5), ("loss", scores == 0.0),
                         ("win_rate", scores)):
        values = values.astype(float)
        out[name] = float(values.mean())
        out[f"{name}_ci95"] = list(bootstrap_interval(values, n_boot=n_boot, seed=seed))
    out["lc_win_rate"] = length_controlled_win_rate(scores, diffs)
    index = np.arange(len(scores))
    out["lc_win_rate_ci95"] = list(bootstrap_interval(
        index, lambda idx: length_controlled_win_rate(scores[idx], diffs[idx]), n_boot=min(n_boot, 500), seed=seed))
    return out


# --------------------------------------------------------------------------------------------------------------
# The toy world's offline reference judge
# --------------------------------------------------------------------------------------------------------------

_ANSWER = re.compile(r"\[Answer (A|B)\]\n(.*?)\n\[End of \1\]", re.DOTALL)
_REFERENCE = re.compile(r"(?:Reference answer|Referenzantwort):\n(.*?)\n\n", re.DOTALL)


def _language(text: str) -> str | None:
    from medslm.language import detect

    return detect(text, ("de", "en"))


CORRECTNESS_TIE = 0.1  # token-F1 differences below this do not decide; language, then length, do


def reference_judge(messages: list[dict[str, str]]) -> str:
    """Judge a :func:`judge_messages` prompt offline (toy world), criterion by criterion:

    1. correctness: token F1 with the reference answer (the generative score), when the two differ by at least
       ``CORRECTNESS_TIE`` — so a truncated or empty answer loses to a complete one, and padding costs precision;
    2. the question's language (the prompt's language);
    3. conciseness: the answer whose word count is closer to the reference's;
    else ``tie``. Use as ``FunctionBackend(reference_judge, name="reference-judge", model="toyworld")``."""
    text = messages[-1]["content"]
    answers = dict(_ANSWER.findall(text))
    ref_match = _REFERENCE.search(text)
    reference = ref_match.group(1).strip() if ref_match else ""
    lang = "de" if text.startswith("Frage:") else "en"
    a, b = answers.get("A", ""), answers.get("B", "")
    if reference:
        f1_a, f1_b = token_f1(a, reference), token_f1(b, reference)
        if abs(f1_a - f1_b) >= CORRECTNESS_TIE:
            return "A" if f1_a > f1_b else "B"
    right_a, right_b = (bool(x.strip()) and _language(x) == lang for x in (a, b))
    if right_a != right_b:
        return "A" if right_a else "B"
    words = len(reference.split())
    gap_a, gap_b = abs(len(a.split()) - words), abs(len(b.split()) - words)
    return "A" if gap_a < gap_b else "B" if gap_b < gap_a else "tie"
