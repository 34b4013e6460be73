"""The toy web corpus's sentence families, and which of them are held out.

A family is a group of sentences written together: a relation of the knowledge base (its templates over its facts)
or a named group of hand-written sentences in :mod:`medslm.toyworld.text` (filler, ambiguous topics, passing
mentions of a disease). A *held-out* document (corpus field ``held_out: true``) is built only from held-out families
of its kind; every other document only from development families. So the held-out families are text that

- the toy world's lexicon annotator is not derived from (00_prepare derives it from gold-labelled development
  documents; a test checks that every entry matched by held-out text is also matched by development text, and
  that the packaged hand-written lexicon, written seeing every family, fails that check),
- the classifier never trains or picks its threshold on (02 sets held-out documents aside),

and 01 and 02 report precision, recall and F1 on the held-out documents separately (``gold_held_out``).

The choice was made before any figure was measured, by a rule: the last-listed relation of each domain and the
last-listed family of each hand-written table, and for ambiguous text the three families holding the sentences the
lexicon visibly copied (morning run, weekly market, contribution rate).
"""

from __future__ import annotations

from collections.abc import Mapping

from medslm.toyworld import text
from medslm.toyworld.knowledge import LANGS, KnowledgeBase, render

HELD_OUT_RELATIONS = frozenset({"drug_class", "sport_players"})
HELD_OUT = {
    "medical_filler": frozenset({"care"}),
    "general_filler": frozenset({"community"}),
    "ambiguous": frozenset({"running", "food", "insurance"}),
    "passing_mention": frozenset({"coach"}),
}
TABLES: dict[str, Mapping[str, Mapping[str, list[str]]]] = {
    "medical_filler": text.FILLER["medical"],
    "general_filler": text.FILLER["general"],
    "ambiguous": text.AMBIGUOUS,
    "passing_mention": text.PASSING_MENTION,
}


def sentences(table: str, lang: str, held_out: bool) -> list[str]:
    """The sentences of a hand-written ``table`` in ``lang`` from its held-out (or its development) families."""
    return [s for family, by_lang in TABLES[table].items() if (family in HELD_OUT[table]) == held_out
            for s in by_lang[lang]]


def relation_ids(kb: KnowledgeBase, domain: str, held_out: bool) -> list[str]:
    """The relations of ``domain`` that are held out (or used for development)."""
    return [r.id for r in kb.relations if r.domain == domain and (r.id in HELD_OUT_RELATIONS) == held_out]


def family_texts(kb: KnowledgeBase, held_out: bool) -> dict[str, list[str]]:
    """Every sentence the held-out (or development) families can contribute, by family name
    (``relation:<id>`` rendered with each of its templates over each of its facts; ``<table>:<family>`` with
    ``{d}`` filled with each disease of the knowledge base), both languages."""
    out: dict[str, list[str]] = {}
    for rel in kb.relations:
        if (rel.id in HELD_OUT_RELATIONS) == held_out:
            out[f"relation:{rel.id}"] = [render(t, f, lang) for lang in LANGS for t in rel.templates[lang]
                                         for f in rel.facts]
    diseases = {lang: [f.s[lang] for f in kb.relation("disease_symptom").facts] for lang in LANGS}
    for table, families in TABLES.items():
        for family, by_lang in families.items():
            if (family in HELD_OUT[table]) == held_out:
                out[f"{table}:{family}"] = [s.format(d=d) if "{d}" in s else s for lang in LANGS
                                            for s in by_lang[lang] for d in (diseases[lang] if "{d}" in s else [""])]
    return out
