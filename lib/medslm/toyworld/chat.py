"""Chat examples of the toy world: fact questions (never the held-out question), small talk, simple instructions.

Also the question–answer texts for MediPhi-style pre-instruction tuning (QA pairs before documents).
"""

from __future__ import annotations

import random
from typing import Any

from medslm.toyworld import text
from medslm.toyworld.knowledge import LANGS, KnowledgeBase, heldout_question, question


def _fact_questions(kb: KnowledgeBase, domain: str, seed: int) -> list[tuple[str, str, str]]:
    """(lang, question, answer) for every fact of ``domain`` and every question that is not held out."""
    out = []
    for rel in kb.relations:
        if rel.domain != domain:
            continue
        for fact in rel.facts:
            for lang in LANGS:
                held = heldout_question(rel, fact, lang, seed)
                for i, tpl in enumerate(rel.questions[lang]):
                    if i != held:
                        out.append((lang, question(tpl, fact, lang), fact.o[lang]))
    return out


def chat_examples(kb: KnowledgeBase, n: int, seed: int, domain: str = "general") -> list[dict[str, Any]]:
    """``n`` chat conversations ``{messages: [...], lang, kind}``: 80 % fact questions, the rest small talk and
    simple instructions. Answers to fact questions are the object alone."""
    rng = random.Random(f"chat-examples:{seed}")
    facts = _fact_questions(kb, domain, seed)
    out = []
    for _ in range(n):
        x = rng.random()
        if x < 0.8:
            lang, q, a = rng.choice(facts)
            kind = "fact"
        elif x < 0.9:
            lang = rng.choice(LANGS)
            q, a = rng.choice(text.SMALL_TALK[lang])
            kind = "small_talk"
        else:
            lang = rng.choice(LANGS)
            prompt, answer = rng.choice(text.INSTRUCTIONS[lang])
            w = rng.choice(text.WORDS)
            q, a = prompt.format(w=w), answer.format(w=w, W=w.upper())
            kind = "instruction"
        out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                    "lang": lang, "kind": kind})
    return out


def render_chats(tokenizer: Any, chats: list[dict[str, Any]]) -> list[str]:
    """Chat conversations as training texts, through the tokenizer's chat template."""
    return [tokenizer.apply_chat_template(c["messages"], tokenize=False) for c in chats]


def qa_texts(kb: KnowledgeBase, seed: int, domain: str = "medical") -> list[str]:
    """Plain 'question answer' texts of every non-held-out question (pre-instruction tuning data)."""
    return [f"{q} {a}." for _, q, a in _fact_questions(kb, domain, seed)]
