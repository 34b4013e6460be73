"""Quick checks after each alignment stage, before 07_evaluate's full evaluation: held-out task scores, answer
language and length, and the knowledge probes (the alignment tax on knowledge).

A model answers a fixed sample of 05_synthesize's held-out test split greedily (llm.py's ``transformers`` backend);
each answer is scored per task with :mod:`medslm.evaluate.generative` — token F1 for text answers, field accuracy for
JSON answers (0 when the JSON does not parse), JSON validity against the task's schema — and its language is
identified with the same lingua filter 05_synthesize uses.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from medslm.evaluate.generative import task_score
from medslm.stats import seeded_sample


def sample_rows(rows: list[dict[str, Any]], n: int, seed: int = 0, purpose: str = "checks") -> list[dict[str, Any]]:
    """A seeded sample of ``n`` rows (all when there are fewer), the same on every call with the same purpose."""
    return seeded_sample(rows, n, f"align-{purpose}:{seed}")


def answer(model_dir: str | Path, rows: list[dict[str, Any]], device: str, max_new_tokens: int,
           batch_size: int = 16) -> list[str]:
    """Greedy answers of the model in ``model_dir`` to the rows' prompts (the conversation without its answer)."""
    from medslm.llm import TransformersBackend

    backend = TransformersBackend(model_dir, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return backend.generate([row["messages"][:-1] for row in rows])




def language_shares(rows: list[dict[str, Any]], predictions: list[str], languages: list[str]) -> list[float | None]:
    """Per text answer the share of its judged words in another language than expected (None: JSON or too short)."""
    from medslm.synthesize.faults import split_sentences
    from medslm.synthesize.filters import LanguageFilter

    detector = LanguageFilter(sorted(set(languages) | {"de", "en"}))
    text = [i for i, row in enumerate(rows) if row.get("format") != "json"]
    shares = detector.foreign_shares([split_sentences(predictions[i]) for i in text],
                                     [rows[i].get("answer_language", rows[i].get("language")) for i in text])
    out: list[float | None] = [None] * len(rows)
    for i, share in zip(text, shares, strict=True):
        out[i] = share
    return out


def summarize(rows: list[dict[str, Any]], predictions: list[str], schemas: dict[str, Any],
              languages: list[str]) -> dict[str, Any]:
    """The quick-check figures of one model: mean task score (mean over tasks), per-task scores, JSON validity,
    the share of text answers in a wrong or mixed language, and answer length (words, and ratio to the reference)."""
    per_task: dict[str, list[float]] = defaultdict(list)
    valid: list[float] = []
    for row, prediction in zip(rows, predictions, strict=True):
        scores = task_score(prediction, row["messages"][-1]["content"], row.get("format"), schemas.get(row["task"]))
        per_task[row["task"]].append(scores["score"])
        if "json_valid" in scores:
            valid.append(scores["json_valid"])
    shares = [s for s in language_shares(rows, predictions, languages) if s is not None]
    lengths = [len(p.split()) for p in predictions]
    ratios = [len(p.split()) / max(1, len(r["messages"][-1]["content"].split())) for p, r in zip(predictions, rows,
                                                                                                  strict=True)]
    task_means = {task: statistics.fmean(values) for task, values in sorted(per_task.items())}
    return {
        "task_score": statistics.fmean(task_means.values()) if task_means else 0.0,
        "tasks": task_means,
        "json_validity": statistics.fmean(valid) if valid else None,
        "wrong_language_share": sum(s > 0 for s in shares) / len(shares) if shares else None,
        "judged_language_answers": len(shares),
        "answer_words": statistics.fmean(lengths) if lengths else 0.0,
        "length_ratio": statistics.median(ratios) if ratios else 0.0,
        "answers": len(rows),
    }


def probe_scores(model_dir: str | Path, probes: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """The toy world's knowledge probes (medical, general, chat) of a model folder."""
    from medslm.evaluate import evaluate_probes
    from medslm.models import load_model, load_tokenizer

    model = load_model(model_dir, device=device)
    scores = evaluate_probes(model, load_tokenizer(model_dir), probes)
    return {k: v for k, v in scores.items() if isinstance(v, int | float)}
