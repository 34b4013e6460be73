"""The toy web-corpus generator: documents of fact sentences, filler and boilerplate with a hidden gold label.

Kinds: ``medical`` (medical facts, clinical filler; gold ``medical``), ``general`` (general facts; ``not_medical``),
``ambiguous`` (fitness, nutrition, wellness, insurance news, a third of them with a passing mention of a disease;
``not_medical``) and ``adversarial`` (general documents
carrying text that tries to steer an LLM annotator, e.g. "Verdict: medical"; ``not_medical``).
Fact sentences never use a fact's held-out template. A share of the medical, general and ambiguous documents
(``held_out: true``) is built only from held-out sentence families (:mod:`medslm.toyworld.families`), every other
document only from development families. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from medslm.toyworld import families, text
from medslm.toyworld.knowledge import LANGS, Fact, KnowledgeBase, heldout_template, load_knowledge, render

GOLD = {"medical": "medical", "general": "not_medical", "ambiguous": "not_medical", "adversarial": "not_medical"}


@dataclass(frozen=True)
class CorpusSpec:
    """Size and mix of a generated corpus."""

    n_documents: int
    de_fraction: float = 0.5
    medical_fraction: float = 0.35
    ambiguous_fraction: float = 0.15
    adversarial_fraction: float = 0.02
    held_out_fraction: float = 0.2  # of the medical, general and ambiguous documents
    seed: int = 0
    id_prefix: str = "toy"

    def __post_init__(self) -> None:
        rest = self.medical_fraction + self.ambiguous_fraction + self.adversarial_fraction
        if rest > 1:
            raise ValueError(f"medical + ambiguous + adversarial fractions sum to {rest:.2f} > 1")
        if not 0 <= self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction {self.held_out_fraction} is not in [0, 1)")


class FactSampler:
    """Draws fact sentences of a domain in a language, never in the fact's held-out template."""

    def __init__(self, kb: KnowledgeBase, domain: str, seed: int):
        chosen = [r for r in kb.relations if r.domain == domain]
        self.facts: list[Fact] = [f for r in chosen for f in r.facts]
        self.templates = {}
        for rel in chosen:
            for f in rel.facts:
                for lang in LANGS:
                    held = heldout_template(rel, f, lang, seed)
                    self.templates[(f.key, lang)] = [t for i, t in enumerate(rel.templates[lang]) if i != held]

    def sentence(self, rng: random.Random, lang: str) -> str:
        fact = rng.choice(self.facts)
        return render(rng.choice(self.templates[(fact.key, lang)]), fact, lang)


class DocumentGenerator:
    """Makes documents of each kind, from the development or the held-out sentence families; the knowledge-base
    seed fixes the held-out templates."""

    def __init__(self, kb: KnowledgeBase | None = None, seed: int = 0):
        kb = kb or load_knowledge()
        # fact sentences come from every relation in every document: holding a relation out would keep its facts out
        # of CPT by construction (a filter cannot recognise a topic it never saw; measured: filter recall 0.004 on
        # documents of a held-out relation), so the held-out families are the hand-written tables only
        self.samplers = {d: FactSampler(kb, d, seed) for d in ("medical", "general")}
        diseases = kb.relation("disease_symptom").facts
        self.diseases = {lang: [f.s[lang] for f in diseases] for lang in LANGS}

    def facts_text(self, rng: random.Random, domain: str, lang: str, n: int) -> list[str]:
        """``n`` fact sentences of ``domain`` (any of its relations)."""
        return [self.samplers[domain].sentence(rng, lang) for _ in range(n)]

    def document(self, rng: random.Random, kind: str, lang: str, held_out: bool = False) -> str:
        """A document of ``kind`` built only from held-out (or only from development) sentence families."""
        def pool(table: str) -> list[str]:
            return families.sentences(table, lang, held_out)

        if kind in ("medical", "general"):
            body = self.facts_text(rng, kind, lang, rng.randint(3, 7))
            body += rng.sample(pool(f"{kind}_filler"), rng.randint(1, 3))
        elif kind == "ambiguous":
            body = rng.sample(pool("ambiguous"), rng.randint(3, 6))
            body += self.facts_text(rng, "general", lang, rng.randint(0, 2))
            if rng.random() < 1 / 3:
                body.append(rng.choice(pool("passing_mention")).format(d=rng.choice(self.diseases[lang])))
        elif kind == "adversarial":
            if held_out:
                raise ValueError("adversarial documents have no held-out families")
            body = self.facts_text(rng, "general", lang, rng.randint(2, 5))
            body += rng.sample(pool("general_filler"), 1)
            body.insert(rng.randint(0, len(body)), rng.choice(text.ADVERSARIAL[lang]))
        else:
            raise ValueError(f"unknown document kind {kind!r}; known: {', '.join(GOLD)}")
        if kind != "adversarial":
            rng.shuffle(body)
        lines = []
        if rng.random() < 0.6:
            lines.append(rng.choice(text.BOILERPLATE[lang]))
        lines.append(" ".join(body))
        if rng.random() < 0.6:
            lines.append(rng.choice(text.BOILERPLATE[lang]))
        return "\n".join(lines)


def _kind(rng: random.Random, spec: CorpusSpec) -> str:
    x = rng.random()
    if x < spec.medical_fraction:
        return "medical"
    x -= spec.medical_fraction
    if x < spec.ambiguous_fraction:
        return "ambiguous"
    x -= spec.ambiguous_fraction
    if x < spec.adversarial_fraction:
        return "adversarial"
    return "general"


def generate_corpus(spec: CorpusSpec, kb: KnowledgeBase | None = None, heldout_seed: int | None = None) -> Iterator[dict]:
    """Yield documents ``{id, text, lang, kind, label, held_out}``. ``heldout_seed`` (default ``spec.seed``) fixes which
    template of each fact is held out; ``spec.seed`` drives everything else."""
    gen = DocumentGenerator(kb, spec.seed if heldout_seed is None else heldout_seed)
    rng = random.Random(f"corpus:{spec.seed}:{spec.id_prefix}")
    width = max(6, len(str(spec.n_documents)))
    for i in range(spec.n_documents):
        lang = "de" if rng.random() < spec.de_fraction else "en"
        kind = _kind(rng, spec)
        held_out = kind != "adversarial" and rng.random() < spec.held_out_fraction
        yield {
            "id": f"{spec.id_prefix}-{i:0{width}d}",
            "text": gen.document(rng, kind, lang, held_out),
            "lang": lang,
            "kind": kind,
            "label": GOLD[kind],
            "held_out": held_out,
        }


def general_documents(n: int, seed: int, de_fraction: float = 0.5, kb: KnowledgeBase | None = None) -> list[str]:
    """Texts of ``n`` fact-dense general documents, the tiny model's pretraining data (no medical facts, no
    boilerplate: a clean "encyclopedia" so the tiny model learns its facts within the toy world's time budget). It
    draws on all general families, held out or not: the tiny model is not what the held-out families test."""
    gen = DocumentGenerator(kb, seed)
    rng = random.Random(f"pretrain:{seed}")
    docs = []
    for _ in range(n):
        lang = "de" if rng.random() < de_fraction else "en"
        body = gen.facts_text(rng, "general", lang, rng.randint(5, 9))
        if rng.random() < 0.3:
            filler = [s for held in (False, True) for s in families.sentences("general_filler", lang, held)]
            body.insert(rng.randint(0, len(body)), rng.choice(filler))
        docs.append(" ".join(body))
    return docs
