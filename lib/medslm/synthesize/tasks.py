"""The instruction tasks of 05_synthesize: exact answers from the toy world, a JSON Schema per task, length bounds.

A task turns a clinical document into an *item*: what the prompt shows (the document, a question, a sentence) and an
exact answer in either language and either format (plain text or a JSON object valid for the task's schema). The
answer language is the document's, except for translation (the other language).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from medslm.toyworld.clinical import MEDICAL_FIELDS, ClinicalDocument, load_clinical_templates
from medslm.toyworld.knowledge import (
    Fact,
    KnowledgeBase,
    heldout_question,
    heldout_template,
    question,
    render,
)

TASK_DATA = Path(__file__).resolve().parents[1] / "toyworld" / "data" / "clinical_tasks.yaml"
FORMATS = ("text", "json")


class SchemaFileError(ValueError):
    """A task's JSON Schema does not parse or is not a valid schema; the message names the task and file."""


@lru_cache(maxsize=2)
def task_data(path: str | Path = TASK_DATA) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def other(lang: str) -> str:
    return "en" if lang == "de" else "de"


@dataclass(frozen=True)
class Answer:
    text: str
    data: dict[str, Any]

    def render(self, fmt: str) -> str:
        return self.text if fmt == "text" else json.dumps(self.data, ensure_ascii=False)


@dataclass(frozen=True)
class Item:
    """One task over one document: the prompt fields and the choice that fixes the exact answer."""

    task: str
    doc: ClinicalDocument
    choice: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_lang(self) -> str:
        return self.doc.lang


# --------------------------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------------------------

_STR = {"type": "string", "minLength": 1}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": properties,
            "required": list(properties), "additionalProperties": False}


class Task:
    """Base: a task's name, schema, length bounds (words) and exact answers."""

    name = ""
    description = ""
    min_words: float = 1
    max_words: float = 40
    relative_to: str | None = None  # None (absolute bounds), "document" or "sentence"
    prose_formats: tuple[str, ...] = FORMATS  # formats whose answers have enough prose to tell their language

    def __init__(self, kb: KnowledgeBase, seed: int = 0):
        self.kb, self.seed = kb, seed

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def choose(self, doc: ClinicalDocument, rng: random.Random) -> dict[str, Any]:
        return {}

    def prompt_fields(self, item: Item) -> dict[str, str]:
        return {"document": item.doc.text}

    def answer_lang(self, item: Item) -> str:
        return item.doc.lang

    def answer(self, item: Item, lang: str) -> Answer:
        raise NotImplementedError

    def fact_roles(self, item: Item) -> list[tuple[str, str]]:
        """(case role, fact side) pairs whose change makes this item's answer wrong (for the wrong-fact fault)."""
        used = item.doc.used_fields()
        return [(role, side) for name, (role, side) in MEDICAL_FIELDS.items() if name in used and side == "o"]

    def length_bounds(self, item: Item, slack: float = 1.0) -> tuple[float, float]:
        base = 1.0
        if self.relative_to == "document":
            base = len(item.doc.text.split())
        elif self.relative_to == "sentence":
            base = len(self.prompt_fields(item)["sentence"].split())
        return self.min_words * base, self.max_words * base * slack


class QuestionAnswering(Task):
    name, description = "qa", "answer a question on a fact the document mentions"
    min_words, max_words = 1, 30
    prose_formats = ("text",)  # the JSON answer is a bare term
    ROLES = ("treatment", "finding", "drug_class", "lab", "specialty")

    def schema(self):
        return _object({"answer": _STR})

    def choose(self, doc, rng):
        subject_field = {"treatment": "drug", "finding": "diagnosis2", "drug_class": "drug2", "lab": "lab",
                         "specialty": "specialty"}
        roles = [r for r in self.ROLES if subject_field[r] in doc.used_fields() or r == "specialty"]
        return {"role": rng.choice(roles)}

    def _fact(self, item):
        return item.doc.case[item.choice["role"]]

    def prompt_fields(self, item):
        fact = self._fact(item)
        rel = self.kb.relation(fact.relation)
        questions = rel.questions[item.doc.lang]
        held = heldout_question(rel, fact, item.doc.lang, self.seed)
        pick = next(i for i in range(len(questions)) if i != held or len(questions) == 1)
        return {"document": item.doc.text, "question": question(questions[pick], fact, item.doc.lang)}

    def answer(self, item, lang):
        fact = self._fact(item)
        rel = self.kb.relation(fact.relation)
        held = heldout_template(rel, fact, lang, self.seed)  # never the template the probes hold out
        template = rel.templates[lang][0 if held != 0 else 1]
        return Answer(render(template, fact, lang), {"answer": fact.o[lang]})

    def fact_roles(self, item):
        return [(item.choice["role"], "o")]


class Extraction(Task):
    name, description = "extract", "extract diagnoses, drugs and lab tests into JSON"
    min_words, max_words = 0, 40
    prose_formats = ()  # lists of terms: too little prose to tell the language

    def schema(self):
        array = {"type": "array", "items": _STR, "uniqueItems": True}
        return _object({"diagnoses": array, "drugs": array, "lab_tests": array})

    def answer(self, item, lang):
        entities = item.doc.entities(lang)
        labels = task_data()["extraction_labels"][lang]
        parts = [f"{labels[key]}: {', '.join(values) or labels['none']}." for key, values in entities.items()]
        return Answer(" ".join(parts), entities)

    def fact_roles(self, item):
        return [("treatment", "o"), ("treatment", "s")]


class Summary(Task):
    name, description = "summary", "summarise the document in one sentence"
    min_words, max_words = 5, 40

    def schema(self):
        return _object({"summary": {"type": "string", "minLength": 10}})

    def answer(self, item, lang):
        spec = task_data()["summary"][lang]
        entities = item.doc.entities(lang)
        title = load_clinical_templates().titles[item.doc.doc_type][lang]
        text = spec["lead"].format(title=title)
        if entities["diagnoses"]:
            text += spec["diagnoses"].format(diagnoses=spec["join"].join(entities["diagnoses"]))
        if entities["drugs"]:
            text += spec["drugs"].format(drugs=spec["join"].join(entities["drugs"]))
        if entities["lab_tests"]:
            text += spec["labs"].format(labs=spec["join"].join(entities["lab_tests"]))
        return Answer(text + spec["end"], {"summary": text + spec["end"]})

    def fact_roles(self, item):
        return [("treatment", "o"), ("finding", "s")]


class Deidentification(Task):
    name, description = "deid", "replace patient names, dates and places by placeholders"
    min_words, max_words, relative_to = 0.6, 1.6, "document"

    def schema(self):
        removed = {"type": "object", "properties": {"type": {"enum": ["NAME", "DATE", "PLACE"]}, "text": _STR},
                   "required": ["type", "text"], "additionalProperties": False}
        return _object({"text": _STR, "removed": {"type": "array", "items": removed}})

    def answer(self, item, lang):
        text = " ".join(item.doc.sentences(lang, deidentified=True))
        removed = [{"type": placeholder.strip("[]"), "text": original}
                   for placeholder, original in item.doc.patient_details()]
        return Answer(text, {"text": text, "removed": removed})


class SpecialtyClassification(Task):
    name, description = "specialty", "name the specialty for the organ in focus"
    min_words, max_words = 1, 6
    prose_formats = ()

    def schema(self):
        names = sorted({f.s[lang] for f in self.kb.relation("specialty_organ").facts for lang in ("de", "en")})
        return _object({"specialty": {"enum": names}})

    def answer(self, item, lang):
        name = item.doc.case["specialty"].s[lang]
        return Answer(name, {"specialty": name})

    def fact_roles(self, item):
        return [("specialty", "s")]


class Translation(Task):
    name, description = "translate", "translate a clinical sentence de↔en"
    min_words, max_words, relative_to = 0.4, 2.5, "sentence"

    def schema(self):
        return _object({"translation": _STR, "target_language": {"enum": ["de", "en"]}})

    def choose(self, doc, rng):
        return {"slot": rng.choice(doc.medical_slots())}

    def prompt_fields(self, item):
        names = prompt_templates()["language_names"][item.doc.lang]
        return {"sentence": item.doc.sentences()[item.choice["slot"]], "target_language": names[other(item.doc.lang)]}

    def answer_lang(self, item):
        return other(item.doc.lang)

    def answer(self, item, lang):
        text = item.doc.sentences(lang)[item.choice["slot"]]
        return Answer(text, {"translation": text, "target_language": lang})

    def fact_roles(self, item):
        slot = item.doc.slots[item.choice["slot"]]["en"]
        return [(role, side) for name, (role, side) in MEDICAL_FIELDS.items() if "{" + name + "}" in slot]


class PlainLanguage(Task):
    name, description = "simplify", "explain the document to a patient in plain words"
    min_words, max_words = 5, 50

    def schema(self):
        return _object({"explanation": {"type": "string", "minLength": 10}})

    def answer(self, item, lang):
        used, values = item.doc.used_fields(), item.doc.values(lang)
        said: set[str] = set()
        sentences = []
        for clause in task_data()["simplify"][lang]:
            needs = set(clause["needs"])
            if needs <= used and not needs <= said:
                sentences.append(clause["text"].format(**values))
                said |= needs
        text = " ".join(sentences)
        return Answer(text, {"explanation": text})

    def fact_roles(self, item):
        return [("treatment", "s"), ("finding", "s")]


TASK_CLASSES: dict[str, type[Task]] = {cls.name: cls for cls in (
    QuestionAnswering, Extraction, Summary, Deidentification, SpecialtyClassification, Translation, PlainLanguage)}
TASK_NAMES = tuple(TASK_CLASSES)


def make_tasks(names: list[str], kb: KnowledgeBase, seed: int = 0) -> dict[str, Task]:
    unknown = [n for n in names if n not in TASK_CLASSES]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASK_NAMES)}")
    return {n: TASK_CLASSES[n](kb, seed) for n in names}


def load_schemas(tasks: dict[str, Task], files: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Each task's JSON Schema (built in, or read from ``files[task]``), checked against the 2020-12 metaschema."""
    schemas = {}
    for name, task in tasks.items():
        where = f"task {name}: built-in schema"
        schema = task.schema()
        if files and name in files:
            path = Path(files[name])
            where = f"task {name}: schema file {path}"
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise SchemaFileError(f"{where}: no such file") from None
            except json.JSONDecodeError as e:
                raise SchemaFileError(f"{where}:{e.lineno}: not valid JSON ({e.msg})") from None
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            raise SchemaFileError(f"{where}: not a valid JSON Schema: {e.message} "
                                  f"(at {'/'.join(map(str, e.path)) or 'the top'})") from None
        schemas[name] = schema
    return schemas


def wrong_fact_item(item: Item, kb: KnowledgeBase, task: Task, rng: random.Random) -> Item | None:
    """The same item over a document with one fact changed (a distractor of the same relation), or None."""
    for role, side in rng.sample(task.fact_roles(item), len(task.fact_roles(item))):
        fact = item.doc.case[role]
        others = [f for f in kb.relation(fact.relation).facts if getattr(f, side)["en"] != getattr(fact, side)["en"]]
        if not others:
            continue
        swap = rng.choice(others)
        wrong = Fact(fact.relation, fact.domain, fact.index, swap.s if side == "s" else fact.s,
                     swap.o if side == "o" else fact.o)
        return replace(item, doc=replace(item.doc, case={**item.doc.case, role: wrong}))
    return None


@lru_cache(maxsize=1)
def prompt_templates() -> dict[str, Any]:
    return yaml.safe_load(Path(__file__).with_name("prompts.yaml").read_text(encoding="utf-8"))
