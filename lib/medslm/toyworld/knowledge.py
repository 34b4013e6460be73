"""The toy world's knowledge base: relations with bilingual templates, questions and facts.

Each fact has one template per language *held out* of every training text (corpus, pretraining documents,
QA pairs). Probes and held-out perplexity texts use that template, so they measure knowledge, not memorised phrasing.
The held-out choice is a stable hash of (seed, fact, language): the same seed always holds out the same templates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

DATA = Path(__file__).with_name("data") / "knowledge.yaml"
LANGS = ("de", "en")
DOMAINS = ("medical", "general")


@dataclass(frozen=True)
class Fact:
    """A (subject, object) pair of a relation, in both languages."""

    relation: str
    domain: str
    index: int
    s: dict[str, str]
    o: dict[str, str]

    @property
    def key(self) -> str:
        return f"{self.relation}:{self.index}"


@dataclass(frozen=True)
class Relation:
    id: str
    domain: str
    description: str
    templates: dict[str, list[str]]
    questions: dict[str, list[str]]
    facts: list[Fact]

    def objects(self, lang: str) -> list[str]:
        """Distinct objects of this relation in a language, in first-seen order."""
        return list(dict.fromkeys(f.o[lang] for f in self.facts))


@dataclass(frozen=True)
class KnowledgeBase:
    relations: list[Relation]

    def relation(self, rid: str) -> Relation:
        for r in self.relations:
            if r.id == rid:
                return r
        raise KeyError(f"unknown relation {rid!r}; known: {', '.join(r.id for r in self.relations)}")

    def facts(self, domain: str | None = None) -> list[Fact]:
        return [f for r in self.relations if domain in (None, r.domain) for f in r.facts]


def _stable_index(n: int, *parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def heldout_template(rel: Relation, fact: Fact, lang: str, seed: int) -> int:
    """Index of the template of ``fact`` held out of all training text in ``lang``."""
    return _stable_index(len(rel.templates[lang]), seed, "template", fact.key, lang)


def heldout_question(rel: Relation, fact: Fact, lang: str, seed: int) -> int:
    """Index of the chat question of ``fact`` held out of the chat examples in ``lang``."""
    return _stable_index(len(rel.questions[lang]), seed, "question", fact.key, lang)


def _capitalize_first(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def render(template: str, fact: Fact, lang: str) -> str:
    """A full sentence: the template with subject and object filled in."""
    return _capitalize_first(template.format(s=fact.s[lang], o=fact.o[lang]))


def cloze_context(template: str, fact: Fact, lang: str) -> str:
    """The template's text before the object (no trailing space): the context of a cloze probe."""
    head = template.split("{o}")[0]
    return _capitalize_first(head.format(s=fact.s[lang])).rstrip()


def question(template: str, fact: Fact, lang: str) -> str:
    return _capitalize_first(template.format(s=fact.s[lang]))


class KnowledgeError(ValueError):
    """The knowledge file breaks the schema; the message names the file, relation and field."""


def _check_relation(path: Path, raw: dict) -> None:
    rid = raw.get("id", "?")
    for key in ("id", "domain", "templates", "questions", "facts"):
        if key not in raw:
            raise KnowledgeError(f"{path}: relation {rid}: missing field {key!r}")
    if raw["domain"] not in DOMAINS:
        raise KnowledgeError(f"{path}: relation {rid}: domain {raw['domain']!r} is not one of {DOMAINS}")
    for lang in LANGS:
        for t in raw["templates"].get(lang, []):
            if t.count("{s}") != 1 or not t.endswith("{o}."):
                raise KnowledgeError(f"{path}: relation {rid}: template {t!r} needs one {{s}} and must end with '{{o}}.'")
        if len(raw["templates"].get(lang, [])) < 2 or not raw["questions"].get(lang):
            raise KnowledgeError(f"{path}: relation {rid}: needs ≥2 templates and ≥1 question in {lang!r}")


@lru_cache(maxsize=4)
def load_knowledge(path: str | Path = DATA) -> KnowledgeBase:
    """Read and check the knowledge base (default: the one shipped with medslm)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    relations = []
    for raw in data["relations"]:
        _check_relation(path, raw)
        facts = [
            Fact(raw["id"], raw["domain"], i, dict(f["s"]), dict(f["o"]))
            for i, f in enumerate(raw["facts"])
        ]
        relations.append(
            Relation(raw["id"], raw["domain"], raw.get("description", ""), raw["templates"], raw["questions"], facts)
        )
    return KnowledgeBase(relations)
