"""The optional judge: a reference-guided score 1–5 from any llm.py backend, or the toy world's offline judge.

The judge sees the task, the reference answer and the candidate, and ends with ``Score: N``. The offline
``reference`` judge knows the world: 5 when the candidate names the same medical facts (drugs, diseases, lab values,
organs, specialties …) as the reference, 1 otherwise, so it catches wrong facts that read fine.
"""

from __future__ import annotations

import re

from medslm.llm import LLM, FunctionBackend, Messages
from medslm.synthesize.grid import Example
from medslm.synthesize.tasks import prompt_templates
from medslm.toyworld.knowledge import KnowledgeBase

_SCORE = re.compile(r"score\s*:\s*\**\s*([1-5])\b", re.I)
_SECTIONS = {"de": ("\n\nReferenz:\n", "\n\nAntwort:\n", "\n\nSchreibe als letzte Zeile"),
             "en": ("\n\nReference:\n", "\n\nAnswer:\n", "\n\nWrite as the last line")}


def judge_messages(example: Example) -> Messages:
    template = prompt_templates()["judge"][example.prompt_lang]
    return [{"role": "user", "content": template.format(prompt=example.messages[-1]["content"],
                                                        reference=example.reference, answer=example.answer or "")}]


def parse_score(reply: str) -> int | None:
    found = _SCORE.findall(reply or "")
    return int(found[-1]) if found else None


_TOKEN = re.compile(r"[\w']+")


class FactFinder:
    """Finds the knowledge base's medical terms (any language, case-insensitive) in a text, by token sequences."""

    def __init__(self, kb: KnowledgeBase):
        self.index: dict[str, list[tuple[str, ...]]] = {}
        terms = {side[lang] for f in kb.facts("medical") for side in (f.s, f.o) for lang in side}
        for term in terms:
            tokens = tuple(_TOKEN.findall(term.lower()))
            if tokens:
                self.index.setdefault(tokens[0], []).append(tokens)

    def __call__(self, text: str) -> set[str]:
        tokens = _TOKEN.findall(text.lower())
        found = set()
        for i, token in enumerate(tokens):
            for term in self.index.get(token, ()):
                if tuple(tokens[i:i + len(term)]) == term:
                    found.add(" ".join(term))
        return found


def reference_judge_backend(kb: KnowledgeBase) -> FunctionBackend:
    """The toy world's judge: compares the medical terms of reference and answer (read back from the prompt)."""
    facts = FactFinder(kb)

    def score(messages: Messages) -> str:
        content = messages[-1]["content"]
        lang = "de" if "\n\nReferenz:\n" in content else "en"
        ref_head, answer_head, tail = _SECTIONS[lang]
        reference = content.split(ref_head, 1)[1].split(answer_head, 1)[0]
        answer = content.split(answer_head, 1)[1].rsplit(tail, 1)[0]
        return f"Score: {5 if facts(reference) == facts(answer) else 1}"

    return FunctionBackend(score, name="reference-judge", model="toyworld", batch_size=512)


def judge_scores(examples: list[Example], llm: LLM, progress: bool = False) -> list[int | None]:
    """A score per example (None when the judge's reply has no ``Score: N``)."""
    replies = llm.generate([judge_messages(e) for e in examples], meta=[{"id": e.id} for e in examples],
                           progress=progress, desc="judge")
    return [parse_score(r) for r in replies]
