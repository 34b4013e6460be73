"""Knowledge probes, chat probes and held-out texts of the toy world.

* cloze probes: for every fact and language, the held-out template cut before the object; 4 choices (the object and
  3 distractor objects of the same relation); ``probe=cloze``, ``domain`` medical/general.
* chat probes: for every general fact and language, the held-out chat question rendered with the chat template and
  the assistant prefix; the choices follow after a space, as the chat template writes answers; ``probe=chat``.
* held-out texts: the held-out template sentences, for perplexity on unseen medical/general text.
"""

from __future__ import annotations

import random
from typing import Any

from medslm.toyworld.knowledge import (
    LANGS,
    Fact,
    KnowledgeBase,
    Relation,
    cloze_context,
    heldout_question,
    heldout_template,
    load_knowledge,
    question,
    render,
)

N_CHOICES = 4


def _choices(rng: random.Random, rel: Relation, fact: Fact, lang: str) -> tuple[list[str], int]:
    true = fact.o[lang]
    # a distractor must not be a true object of the same subject in this relation
    same_subject = {f.o[lang] for f in rel.facts if f.s[lang] == fact.s[lang]}
    pool = [o for o in rel.objects(lang) if o not in same_subject]
    distractors = rng.sample(pool, N_CHOICES - 1)
    gold = rng.randrange(N_CHOICES)
    choices = distractors[:gold] + [true] + distractors[gold:]
    return choices, gold


def cloze_probes(kb: KnowledgeBase, seed: int) -> list[dict[str, Any]]:
    """One 4-option cloze probe per fact and language, on the fact's held-out template."""
    rng = random.Random(f"cloze:{seed}")
    out = []
    for rel in kb.relations:
        for fact in rel.facts:
            for lang in LANGS:
                tpl = rel.templates[lang][heldout_template(rel, fact, lang, seed)]
                choices, gold = _choices(rng, rel, fact, lang)
                out.append({
                    "id": f"cloze:{fact.key}:{lang}", "probe": "cloze", "domain": rel.domain, "lang": lang,
                    "relation": rel.id, "context": cloze_context(tpl, fact, lang), "choices": choices,
                    "gold": gold, "delimiter": " ",
                })
    return out


def chat_probes(kb: KnowledgeBase, tokenizer: Any, seed: int, domain: str = "general") -> list[dict[str, Any]]:
    """One 4-option chat probe per fact of ``domain`` and language, on the held-out question."""
    rng = random.Random(f"chat:{seed}")
    out = []
    for rel in kb.relations:
        if rel.domain != domain:
            continue
        for fact in rel.facts:
            for lang in LANGS:
                q = question(rel.questions[lang][heldout_question(rel, fact, lang, seed)], fact, lang)
                context = tokenizer.apply_chat_template(
                    [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
                )
                choices, gold = _choices(rng, rel, fact, lang)
                out.append({
                    "id": f"chat:{fact.key}:{lang}", "probe": "chat", "domain": rel.domain, "lang": lang,
                    "relation": rel.id, "question": q, "context": context, "choices": choices, "gold": gold,
                    "delimiter": " ",
                })
    return out


def heldout_texts(kb: KnowledgeBase, seed: int) -> list[dict[str, Any]]:
    """Every fact's held-out template sentence, per language: unseen text for perplexity."""
    out = []
    for rel in kb.relations:
        for fact in rel.facts:
            for lang in LANGS:
                tpl = rel.templates[lang][heldout_template(rel, fact, lang, seed)]
                out.append({"domain": rel.domain, "lang": lang, "relation": rel.id, "text": render(tpl, fact, lang)})
    return out


def world_summary(kb: KnowledgeBase | None = None, seed: int = 0) -> dict[str, Any]:
    """The facts and their held-out template/question indices, for ``world.json``."""
    kb = kb or load_knowledge()
    return {
        "seed": seed,
        "relations": [
            {
                "id": rel.id, "domain": rel.domain, "description": rel.description,
                "facts": [
                    {"s": f.s, "o": f.o,
                     "heldout_template": {lang: heldout_template(rel, f, lang, seed) for lang in LANGS},
                     "heldout_question": {lang: heldout_question(rel, f, lang, seed) for lang in LANGS}}
                    for f in rel.facts
                ],
            }
            for rel in kb.relations
        ],
    }
