"""Clinical documents of the toy world: letters, reports and plans about fake patients, in German and English.

Each document type has its own template family (``data/clinical.yaml``): slots in order, each with aligned German
and English variants. A document draws a fake patient (name, physician, dates, city, hospital) and a small clinical
case from the knowledge base — a known disease with its drug, a new disease with its leading symptom, a second drug
with its class, a lab value with what it assesses, an organ with its specialty — so every task over the document has
an exact answer. The same seed gives the same documents; each (type, language) cell has its own random stream.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from medslm.toyworld.knowledge import LANGS, Fact, KnowledgeBase

DATA = Path(__file__).with_name("data") / "clinical.yaml"
PATIENT_FIELDS = ("name", "doctor", "birth", "date", "city", "hospital")
# de-identification: what each patient detail becomes
PLACEHOLDER = {"name": "[NAME]", "doctor": "[NAME]", "birth": "[DATE]", "date": "[DATE]", "city": "[PLACE]",
               "hospital": "[PLACE]"}
# medical placeholders → (role in the case, side of the fact)
MEDICAL_FIELDS = {
    "drug": ("treatment", "s"), "diagnosis": ("treatment", "o"),
    "diagnosis2": ("finding", "s"), "symptom": ("finding", "o"),
    "drug2": ("drug_class", "s"), "drug_class": ("drug_class", "o"),
    "lab": ("lab", "s"), "lab_purpose": ("lab", "o"),
    "specialty": ("specialty", "s"), "organ": ("specialty", "o"),
}
CASE_RELATIONS = {"treatment": "drug_indication", "finding": "disease_symptom", "drug_class": "drug_class",
                  "lab": "labtest_measures", "specialty": "specialty_organ"}
_FIELD = re.compile(r"\{(\w+)\}")


class ClinicalTemplateError(ValueError):
    """The clinical template file breaks its schema; the message names the file, type, slot and variant."""


@dataclass(frozen=True)
class ClinicalTemplates:
    people: dict[str, Any]
    titles: dict[str, dict[str, str]]  # doc type → language → title
    slots: dict[str, list[list[dict[str, str]]]]  # doc type → slots → variants → language → template

    @property
    def doc_types(self) -> list[str]:
        return list(self.slots)


@lru_cache(maxsize=4)
def load_clinical_templates(path: str | Path = DATA) -> ClinicalTemplates:
    """Read and check the clinical templates (default: the file shipped with medslm)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    known = set(PATIENT_FIELDS) | set(MEDICAL_FIELDS) | {"dose"}
    titles, slots = {}, {}
    for name, spec in data["doc_types"].items():
        titles[name] = spec["title"]
        slots[name] = spec["slots"]
        for i, slot in enumerate(spec["slots"]):
            for j, variant in enumerate(slot):
                where = f"{path}: doc type {name}, slot {i + 1}, variant {j + 1}"
                if set(variant) != set(LANGS):
                    raise ClinicalTemplateError(f"{where}: needs exactly the languages {LANGS}, got {sorted(variant)}")
                fields = {lang: set(_FIELD.findall(variant[lang])) for lang in LANGS}
                if fields["de"] != fields["en"]:
                    raise ClinicalTemplateError(f"{where}: German and English use different placeholders "
                                                f"{sorted(fields['de'])} vs {sorted(fields['en'])}")
                if fields["de"] - known:
                    raise ClinicalTemplateError(f"{where}: unknown placeholder(s) {sorted(fields['de'] - known)}; "
                                                f"known: {sorted(known)}")
    return ClinicalTemplates(data["people"], titles, slots)


def format_date(day: date, lang: str, months: list[str]) -> str:
    """German ``03.04.1956``; English ``3 April 1956``."""
    return f"{day.day:02d}.{day.month:02d}.{day.year}" if lang == "de" else f"{day.day} {months[day.month - 1]} {day.year}"


def _capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


@dataclass(frozen=True)
class Patient:
    """Fake patient details (the document's language decides names and places)."""

    name: str
    doctor: str
    birth: date
    date: date
    city: str
    hospital: str


@dataclass(frozen=True)
class ClinicalDocument:
    """One generated document: its slots (aligned German/English variants), patient and case."""

    id: str
    doc_type: str
    lang: str
    patient: Patient
    case: dict[str, Fact]  # role → fact (see CASE_RELATIONS)
    dose: int
    slots: tuple[dict[str, str], ...]
    months: tuple[str, ...]

    def values(self, lang: str, deidentified: bool = False) -> dict[str, str]:
        """Placeholder values in ``lang`` (patient details stay the document's; dates follow ``lang``)."""
        values = {field: getattr(self.patient, field) for field in PATIENT_FIELDS}
        values["birth"] = format_date(self.patient.birth, lang, list(self.months))
        values["date"] = format_date(self.patient.date, lang, list(self.months))
        if deidentified:
            values = {field: PLACEHOLDER[field] for field in PATIENT_FIELDS}
        for field, (role, side) in MEDICAL_FIELDS.items():
            fact = self.case[role]
            values[field] = (fact.s if side == "s" else fact.o)[lang]
        values["dose"] = str(self.dose)
        return values

    def sentences(self, lang: str | None = None, deidentified: bool = False) -> list[str]:
        lang = lang or self.lang
        values = self.values(lang, deidentified)
        return [_capitalize(slot[lang].format(**values)) for slot in self.slots]

    @property
    def text(self) -> str:
        return " ".join(self.sentences())

    def deidentified_text(self) -> str:
        return " ".join(self.sentences(deidentified=True))

    def used_fields(self) -> set[str]:
        return {f for slot in self.slots for f in _FIELD.findall(slot["en"])}

    def entities(self, lang: str | None = None) -> dict[str, list[str]]:
        """Diagnoses, drugs and lab tests the document mentions (in its language, in a fixed order)."""
        lang = lang or self.lang
        used, values = self.used_fields(), self.values(lang)
        pick = lambda fields: [values[f] for f in fields if f in used]  # noqa: E731
        return {"diagnoses": pick(("diagnosis", "diagnosis2")), "drugs": pick(("drug", "drug2")),
                "lab_tests": pick(("lab",))}

    def patient_details(self) -> list[tuple[str, str]]:
        """(placeholder, original text) of each patient detail the document shows."""
        used, values = self.used_fields(), self.values(self.lang)
        return [(PLACEHOLDER[f], values[f]) for f in PATIENT_FIELDS if f in used]

    def medical_slots(self) -> list[int]:
        """Indices of slots that carry clinical content (candidates for translation and rewriting)."""
        return [i for i, slot in enumerate(self.slots) if set(_FIELD.findall(slot["en"])) & set(MEDICAL_FIELDS)]

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "doc_type": self.doc_type, "lang": self.lang, "text": self.text,
                "entities": self.entities(), "case": {role: fact.key for role, fact in self.case.items()}}


def _unique_object_facts(kb: KnowledgeBase, relation: str) -> list[Fact]:
    """Facts whose object (in English) no other fact of the relation shares: the answer is then unique."""
    facts = kb.relation(relation).facts
    counts: dict[str, int] = {}
    for f in facts:
        counts[f.o["en"]] = counts.get(f.o["en"], 0) + 1
    return [f for f in facts if counts[f.o["en"]] == 1]


def _draw_patient(rng: random.Random, people: dict[str, Any], lang: str) -> Patient:
    first, last = people["first_names"][lang], people["last_names"][lang]
    city = rng.choice(people["cities"][lang])
    doctor = people["doctor"][lang].format(first=rng.choice(first), last=rng.choice(last))
    birth = date(1935, 1, 1) + timedelta(days=rng.randrange(365 * 70))
    when = date(2022, 1, 1) + timedelta(days=rng.randrange(365 * 4))
    return Patient(name=f"{rng.choice(first)} {rng.choice(last)}", doctor=doctor, birth=birth, date=when, city=city,
                   hospital=rng.choice(people["hospitals"][lang]).format(city=city))


def _draw_case(rng: random.Random, kb: KnowledgeBase) -> dict[str, Fact]:
    case = {role: rng.choice(kb.relation(rel).facts) for role, rel in CASE_RELATIONS.items() if role != "specialty"}
    case["specialty"] = rng.choice(_unique_object_facts(kb, "specialty_organ"))
    while case["finding"].s["en"].lower() == case["treatment"].o["en"].lower():  # two different diseases
        case["finding"] = rng.choice(kb.relation("disease_symptom").facts)
    return case


def generate_documents(kb: KnowledgeBase, doc_types: list[str], languages: list[str], per_cell: int, seed: int = 0,
                       templates: ClinicalTemplates | None = None) -> list[ClinicalDocument]:
    """``per_cell`` documents for each (type, language), deterministic for ``seed``."""
    templates = templates or load_clinical_templates()
    unknown = [t for t in doc_types if t not in templates.slots]
    if unknown:
        raise ValueError(f"unknown document type(s) {unknown}; known: {', '.join(templates.doc_types)}")
    months = tuple(templates.people["months"]["en"])
    docs = []
    for doc_type in doc_types:
        for lang in languages:
            rng = random.Random(f"{seed}:clinical:{doc_type}:{lang}")
            for i in range(per_cell):
                slots = tuple(rng.choice(slot) for slot in templates.slots[doc_type])
                docs.append(ClinicalDocument(
                    id=f"{doc_type}-{lang}-{i:04d}", doc_type=doc_type, lang=lang,
                    patient=_draw_patient(rng, templates.people, lang), case=_draw_case(rng, kb),
                    dose=rng.choice((5, 10, 20, 25, 50, 100, 250, 500)), slots=slots, months=months))
    return docs
