"""Preference pairs for DPO: chosen = a kept answer, rejected = the same prompt answered badly.

Rejected answers are the teacher's faulty variants (wrong or mixed language, verbose, wrong fact, broken JSON; the
kind is recorded) and, optionally, the current model's own answer (``model_answer``, sampled with llm.py from
``04_merge/selected`` or any model folder) wherever it differs from the chosen one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from medslm.llm import LLM
from medslm.synthesize.faults import rejected_answer
from medslm.synthesize.grid import Example
from medslm.synthesize.tasks import Task
from medslm.toyworld.knowledge import KnowledgeBase


@dataclass
class PreferencePair:
    example: Example
    rejected: str
    kind: str

    def record(self) -> dict[str, Any]:
        prompt = [dict(m) for m in self.example.messages]
        return {"prompt": prompt, "chosen": [{"role": "assistant", "content": self.example.answer}],
                "rejected": [{"role": "assistant", "content": self.rejected}], "rejection": self.kind,
                **self.example.provenance()}


def fault_pairs(kept: list[Example], tasks: dict[str, Task], kb: KnowledgeBase, kinds: list[str],
                fraction: float, seed: int = 0) -> list[PreferencePair]:
    """For a seeded ``fraction`` of the kept examples, a faulty variant of a kind drawn from ``kinds``."""
    pairs = []
    for e in kept:
        rng = random.Random(f"{seed}:pair:{e.id}")
        if rng.random() >= fraction:
            continue
        found = rejected_answer(e, tasks[e.task], kb, kinds, rng)
        if found is not None:
            pairs.append(PreferencePair(e, found[1], found[0]))
    return pairs


def model_pairs(kept: list[Example], llm: LLM, limit: int, seed: int = 0,
                progress: bool = False) -> list[PreferencePair]:
    """The model's own answers to up to ``limit`` kept prompts (seeded sample) as rejected, where they differ."""
    sample = random.Random(f"{seed}:model_pairs").sample(kept, min(limit, len(kept)))
    replies = llm.generate([e.messages for e in sample], meta=[{"id": e.id} for e in sample], progress=progress,
                           desc="model answers")
    return [PreferencePair(e, r.strip(), "model_answer") for e, r in zip(sample, replies, strict=True)
            if r.strip() and r.strip() != (e.answer or "").strip()]
