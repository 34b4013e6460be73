"""Faults real teachers make, injected on purpose with ground truth: the filters and DPO are then measured.

- ``wrong_language``: the whole answer in the other language;
- ``mixed_language``: a German answer with an English sentence (replacing one of its sentences, or appended);
- ``verbose``: the right answer wrapped in a preamble and needless closing sentences;
- ``wrong_fact``: one fact replaced by another of the same relation (the answer reads fine but is wrong);
- ``invalid_json``: a JSON answer cut off, with single quotes, a trailing comma or prose around it;
- ``near_duplicate``: a copy of an example, exact or with one word of the prompt changed.

A fault applies only where it is meaningful (language faults need prose: a sentence of at least
:data:`PROSE_MIN_WORDS` words; verbosity and mixing are text faults; invalid JSON is a JSON fault).
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from medslm.synthesize.grid import Example
from medslm.synthesize.tasks import Task, other, task_data, wrong_fact_item
from medslm.toyworld.knowledge import KnowledgeBase

REJECTION_KINDS = ("wrong_language", "mixed_language", "verbose", "wrong_fact", "invalid_json")
FAULT_KINDS = (*REJECTION_KINDS, "near_duplicate")
PROSE_MIN_WORDS = 6
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÄÖÜ\[])")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


def split_sentences(text: str) -> list[str]:
    """Sentences of a plain-text answer (a full stop followed by space and a capital or '[')."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def words(text: str) -> list[str]:
    """Words made of letters (numbers, dates and [PLACEHOLDERS] do not count)."""
    return _WORD.findall(re.sub(r"\[[A-Z]+\]", " ", text))


def has_prose(text: str, min_words: int = PROSE_MIN_WORDS) -> bool:
    return any(len(words(s)) >= min_words for s in split_sentences(text))


def applicable(kind: str, example: Example, task: Task) -> bool:
    prose = example.format in task.prose_formats and has_prose(task.answer(example.item, example.answer_lang).text)
    if kind == "wrong_language":
        return prose
    if kind == "mixed_language":
        return prose and example.format == "text" and example.answer_lang == "de"
    if kind == "verbose":
        return example.format == "text"
    if kind == "invalid_json":
        return example.format == "json"
    return kind in ("wrong_fact", "near_duplicate")


def corrupt(example: Example, kind: str, task: Task, kb: KnowledgeBase, rng: random.Random) -> str | None:
    """The answer of ``example`` with fault ``kind`` (None when the fault cannot be made for it)."""
    item, fmt, lang = example.item, example.format, example.answer_lang
    right = task.answer(item, lang)
    data = task_data()
    if kind == "wrong_language":
        return task.answer(item, other(lang)).render(fmt)
    if kind == "mixed_language":
        mine, english = split_sentences(right.text), split_sentences(task.answer(item, "en").text)
        swappable = [i for i, s in enumerate(english) if len(words(s)) >= PROSE_MIN_WORDS]
        if len(mine) >= 2 and len(mine) == len(english) and swappable:
            k = rng.choice(swappable)
            return " ".join(english[k] if i == k else s for i, s in enumerate(mine))
        return f"{right.text} {rng.choice(data['english_tails'])}"
    if kind == "verbose":
        pad = data["verbose"][lang]
        tails = rng.sample(pad["tails"], 3)
        return " ".join([rng.choice(pad["preambles"]), right.text, *tails])
    if kind == "wrong_fact":
        wrong = wrong_fact_item(item, kb, task, rng)
        answer = task.answer(wrong, lang).render(fmt) if wrong is not None else None
        return answer if answer != right.render(fmt) else None
    if kind == "invalid_json":
        text = right.render("json")
        how = rng.choice(("cut", "quotes", "comma", "prose"))
        if how == "cut":
            return text[: max(1, int(len(text) * rng.uniform(0.3, 0.8)))]
        if how == "quotes":
            return repr(right.data)
        if how == "comma":
            return text[:-1] + ", }"
        return f"Here is the JSON: {text}" if lang == "en" else f"Hier ist das JSON: {text}"
    raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")


def inject_faults(examples: list[Example], tasks: dict[str, Task], kb: KnowledgeBase, rates: dict[str, float],
                  seed: int = 0) -> list[Example]:
    """Corrupt answers in place (at most one fault per example, recorded in ``faults``) and return the
    near-duplicate copies to append (``duplicate_of`` names the original)."""
    for e in examples:
        rng = random.Random(f"{seed}:fault:{e.id}")
        for kind in REJECTION_KINDS:
            if rates.get(kind, 0.0) > 0 and rng.random() < rates[kind] and applicable(kind, e, tasks[e.task]):
                bad = corrupt(e, kind, tasks[e.task], kb, rng)
                if bad is not None and bad != e.answer:
                    e.answer, e.faults = bad, [kind]
                    break
    rng = random.Random(f"{seed}:near_duplicates")
    clean = [e for e in examples if not e.faults]
    copies = []
    for i, e in enumerate(rng.sample(clean, min(len(clean), round(rates.get("near_duplicate", 0.0) * len(examples))))):
        messages = [dict(m) for m in e.messages]
        if i % 2:  # every other copy changes one word of the prompt; the rest are exact copies
            tokens = messages[-1]["content"].split(" ")
            k = rng.randrange(1, len(tokens))
            tokens[k] = tokens[k] + " " + tokens[k] if rng.random() < 0.5 else ""
            messages[-1]["content"] = " ".join(t for t in tokens if t)
        copies.append(replace(e, id=f"{e.id}:dup{i}", messages=messages, faults=["near_duplicate"], duplicate_of=e.id,
                              verdicts={}))
    return copies


def rejected_answer(example: Example, task: Task, kb: KnowledgeBase, kinds: list[str],
                    rng: random.Random) -> tuple[str, str] | None:
    """A faulty answer to pair with ``example``'s kept answer: (kind, answer), or None if no kind applies."""
    for kind in rng.sample(kinds, len(kinds)):
        if applicable(kind, example, task):
            bad = corrupt(example, kind, task, kb, rng)
            if bad is not None and bad != example.answer:
                return kind, bad
    return None
