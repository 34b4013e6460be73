"""The toy web corpus's sentence families, and which of them are held out.

A family is a named group of hand-written sentences in :mod:`medslm.toyworld.text` (filler, ambiguous topics,
passing mentions of a disease). A *held-out* document (corpus field ``held_out: true``) is built only from held-out
families of its kind; every other document only from development families. Fact sentences (a relation's templates
over its facts) come from every relation in every document: holding a relation out keeps its facts out of CPT by
construction, since no filter recognises a topic it never saw (tried: with ``drug_class`` held out, the filter's
recall on held-out documents was 0.004 and CPT never learnt the relation). So the held-out families are text that

- the toy world's lexicon annotator is not derived from (00_prepare derives it from gold-labelled development
  documents; a test checks that every entry matched by held-out text is also matched by development text, and
  that the packaged hand-written lexicon, written seeing every family, fails that check),
- the classifier never trains or picks its threshold on (02 sets held-out documents aside),

and 01 and 02 report precision, recall and F1 on the held-out documents separately (``gold_held_out``).

The choice was made before any figure was measured, by a rule: the last-listed family of each hand-written table,
and for ambiguous text the three families holding the sentences the lexicon visibly copied (morning run, weekly
market, contribution rate).
"""

from __future__ import annotations

from collections.abc import Mapping

from medslm.toyworld import text
from medslm.toyworld.knowledge import LANGS, KnowledgeBase

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


def family_texts(kb: KnowledgeBase, held_out: bool) -> dict[str, list[str]]:
    """Every sentence the held-out (or development) families can contribute, by family name (``<table>:<family>``,
    ``{d}`` filled with each disease of the knowledge base), both languages."""
    out: dict[str, list[str]] = {}
    diseases = {lang: [f.s[lang] for f in kb.relation("disease_symptom").facts] for lang in LANGS}
    for table, families in TABLES.items():
        for family, by_lang in families.items():
            if (family in HELD_OUT[table]) == held_out:
                out[f"{table}:{family}"] = [s.format(d=d) if "{d}" in s else s for lang in LANGS
                                            for s in by_lang[lang] for d in (diseases[lang] if "{d}" in s else [""])]
    return out
