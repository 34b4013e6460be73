"""The task × document type × language × format grid: one prompt per cell entry, with its exact reference answer.

Every document answers every task in every format (or ``tasks_per_document`` of them, dealt evenly), so a cell
(task, type, language, format) holds as many examples as there are documents of that type and language that answer
the task. Prompts come from ``prompts.yaml`` (one template per task and
language); a JSON prompt carries the task's schema, in full or as a compact outline of the object to write.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from medslm.synthesize.tasks import Item, Task, prompt_templates
from medslm.toyworld.clinical import ClinicalDocument

PROMPT_VERSION = "synth-prompts-v2"


@dataclass
class Example:
    """One instruction example: the prompt, the exact reference, the teacher's answer and what happened to it."""

    id: str
    doc_id: str
    doc_type: str
    task: str
    format: str
    prompt_lang: str
    answer_lang: str
    messages: list[dict[str, str]]
    reference: str
    item: Item = field(repr=False)
    answer: str | None = None
    teacher: str = ""
    faults: list[str] = field(default_factory=list)
    duplicate_of: str | None = None
    status: str = "ok"  # "failed": the teacher gave no parseable reply
    attempts: int = 0
    verdicts: dict[str, str] = field(default_factory=dict)

    @property
    def prompt_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.messages, ensure_ascii=False).encode()).hexdigest()[:16]

    @property
    def kept(self) -> bool:
        return self.status == "ok" and all(v != "removed" for v in self.verdicts.values())

    def provenance(self) -> dict[str, Any]:
        return {"id": self.id, "doc_id": self.doc_id, "task": self.task, "doc_type": self.doc_type,
                "language": self.prompt_lang, "answer_language": self.answer_lang, "format": self.format,
                "teacher": self.teacher, "prompt_version": PROMPT_VERSION, "prompt_hash": self.prompt_hash,
                "faults": list(self.faults), "duplicate_of": self.duplicate_of or "",
                "filters": dict(self.verdicts), "reference": self.reference}


MAX_OUTLINE_ENUM = 8  # enums with more values are outlined as "…" (the schema still checks the value)


def schema_outline(schema: dict[str, Any]) -> str:
    """The object a JSON Schema asks for, written as a compact template: ``{"drugs": ["…"], "kind": "A" | "B"}``.

    Strings become ``"…"``, arrays show one item, enums list their values (up to ``MAX_OUTLINE_ENUM``). A prompt
    with the outline is 100–450 tokens shorter than one with the full schema for the built-in tasks; answers are
    still validated against the full schema.
    """
    if "enum" in schema:
        values = schema["enum"]
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in values) if len(values) <= MAX_OUTLINE_ENUM \
            else '"…"'
    kind = schema.get("type")
    if kind == "object":
        fields = ", ".join(f"{json.dumps(name, ensure_ascii=False)}: {schema_outline(sub)}"
                           for name, sub in schema.get("properties", {}).items())
        return "{" + fields + "}"
    if kind == "array":
        return "[" + schema_outline(schema.get("items", {})) + ", …]"
    return {"string": '"…"', "integer": "0", "number": "0.0", "boolean": "true | false", "null": "null"}.get(
        kind if isinstance(kind, str) else "", '"…"')


def build_messages(task: Task, item: Item, fmt: str, schema: dict[str, Any],
                   json_prompt: str = "outline") -> list[dict[str, str]]:
    """The system and user turns of one example; a JSON prompt carries the full schema or its outline."""
    prompts, lang = prompt_templates(), item.prompt_lang
    user = prompts["tasks"][task.name][lang].format(**task.prompt_fields(item))
    if fmt == "json":
        shape = json.dumps(schema, ensure_ascii=False) if json_prompt == "schema" else schema_outline(schema)
        user += "\n\n" + prompts[f"json_{json_prompt}_suffix"][lang].format(schema=shape)
    else:
        user += "\n\n" + prompts["text_suffix"][lang]
    return [{"role": "system", "content": prompts["system"][lang]}, {"role": "user", "content": user}]


def retry_message(lang: str, error: str) -> dict[str, str]:
    return {"role": "user", "content": prompt_templates()["retry"][lang].format(error=error)}


def document_tasks(docs: list[ClinicalDocument], task_names: list[str], per_document: int = 0,
                   seed: int = 0) -> dict[str, list[str]]:
    """The tasks each document answers: all of them (``per_document`` 0), or ``per_document`` of them, dealt in
    turn from a seeded order of the tasks within each (type, language), so every task gets as many documents."""
    if per_document <= 0 or per_document >= len(task_names):
        return {doc.id: list(task_names) for doc in docs}
    dealt: dict[str, list[str]] = {}
    cells: dict[tuple[str, str], list[ClinicalDocument]] = {}
    for doc in docs:
        cells.setdefault((doc.doc_type, doc.lang), []).append(doc)
    for (doc_type, lang), cell in cells.items():
        order = list(task_names)
        random.Random(f"{seed}:tasks:{doc_type}:{lang}").shuffle(order)
        for i, doc in enumerate(cell):
            dealt[doc.id] = [order[(i * per_document + j) % len(order)] for j in range(per_document)]
    return dealt


def build_grid(docs: list[ClinicalDocument], tasks: dict[str, Task], formats: list[str],
               schemas: dict[str, dict[str, Any]], seed: int = 0, json_prompt: str = "outline",
               tasks_per_document: int = 0) -> list[Example]:
    """Every (document, task, format) as an :class:`Example` with its prompt and exact reference answer; with
    ``tasks_per_document`` > 0 each document answers that many tasks (see :func:`document_tasks`)."""
    examples = []
    dealt = document_tasks(docs, list(tasks), tasks_per_document, seed)
    for doc in docs:
        for name in dealt[doc.id]:
            task = tasks[name]
            rng = random.Random(f"{seed}:choice:{doc.id}:{name}")
            item = Item(name, doc, task.choose(doc, rng))
            lang = task.answer_lang(item)
            answer = task.answer(item, lang)
            for fmt in formats:
                examples.append(Example(
                    id=f"{doc.id}:{name}:{fmt}", doc_id=doc.id, doc_type=doc.doc_type, task=name, format=fmt,
                    prompt_lang=doc.lang, answer_lang=lang, messages=build_messages(task, item, fmt, schemas[name], json_prompt),
                    reference=answer.render(fmt), item=item))
    return examples


def grid_table(examples: list[Example]) -> dict[str, Any]:
    """Counts per grid axis and the number of cells (task × type × language × format)."""
    cells = Counter((e.task, e.doc_type, e.prompt_lang, e.format) for e in examples if e.duplicate_of is None)
    return {"cells": len(cells), "examples": sum(cells.values()),
            "per_cell": {"min": min(cells.values(), default=0), "max": max(cells.values(), default=0)},
            "tasks": sorted({c[0] for c in cells}), "doc_types": sorted({c[1] for c in cells}),
            "languages": sorted({c[2] for c in cells}), "formats": sorted({c[3] for c in cells})}
