"""Held-out sentence families: the lexicon annotator and the classifier never see them, 01/02 report them apart."""

import pytest

from medslm.annotate import annotation_report, binary_metrics, make_llm
from medslm.classify import load_labels
from medslm.lexicon import default_lexicon, load_lexicon, write_lexicon
from medslm.params import AnnotateParams, PrepareParams
from medslm.rundir import RunDir, write_jsonl
from medslm.toyworld import families, text
from medslm.toyworld.build import development_lexicon, development_sample
from medslm.toyworld.corpus import CorpusSpec, generate_corpus
from medslm.toyworld.knowledge import LANGS, load_knowledge, render

KB = load_knowledge()


@pytest.fixture(scope="module")
def corpus():
    return list(generate_corpus(CorpusSpec(3000, seed=0)))


@pytest.fixture(scope="module")
def world_lexicon():
    return development_lexicon(PrepareParams(), seed=0, kb=KB)


def only_held_out_entries(lexicon) -> set[str]:
    """Entries matched by some held-out family's text and by no development text (development families and the fact
    sentences, which every document shares)."""
    matched = {}
    for held in (False, True):
        matched[held] = {entry for texts in families.family_texts(KB, held).values() for t in texts
                         for entry in lexicon.matches(t)[0]}
    facts = "\n".join(render(t, f, lang) for rel in KB.relations for lang in LANGS for t in rel.templates[lang]
                      for f in rel.facts)
    return matched[True] - matched[False] - set(lexicon.matches(facts)[0])


def test_every_kind_and_language_has_held_out_documents_built_only_from_held_out_families(corpus):
    held = [d for d in corpus if d["held_out"]]
    assert {(d["kind"], d["lang"]) for d in held} == {(k, lang) for k in ("medical", "general", "ambiguous")
                                                      for lang in LANGS}
    assert 0.15 < len(held) / len(corpus) < 0.25 and not any(d["kind"] == "adversarial" for d in held)
    for is_held in (False, True):
        own = "\n".join(d["text"] for d in corpus if d["held_out"] == is_held)
        other = "\n".join(d["text"] for d in corpus if d["held_out"] != is_held)
        for name, sentences in families.family_texts(KB, is_held).items():
            found = [s for s in sentences if s in own]
            assert found, f"{name}: no sentence of it in its documents"
            assert not [s for s in sentences if s in other], f"{name} leaks into the other documents"


def test_every_table_has_development_and_held_out_families():
    for table, families_of in families.TABLES.items():
        assert families.HELD_OUT[table] < set(families_of), table  # held-out families exist and are not all
        for lang in LANGS:
            assert families.sentences(table, lang, True) and families.sentences(table, lang, False)
    # the families keep every hand-written sentence, parallel in both languages
    assert sum(len(f["en"]) for f in text.AMBIGUOUS.values()) == 15
    assert all(len(f["en"]) == len(f["de"]) for t in families.TABLES.values() for f in t.values())


def test_the_world_lexicon_is_derived_from_development_documents_only(world_lexicon):
    sample = development_sample(PrepareParams(), seed=0, kb=KB)
    assert len(sample) == PrepareParams().lexicon_documents and not any(d["held_out"] for d in sample)
    entries = {e for terms in world_lexicon.terms.values() for e in terms}
    assert len(entries) > 100 and not any("*" in e for e in entries)  # whole words, each found in the sample
    assert set(world_lexicon.matches("\n".join(d["text"] for d in sample))[0]) == entries
    assert only_held_out_entries(world_lexicon) == set()


def test_the_check_catches_a_lexicon_written_from_held_out_text():
    """Negative control: the packaged hand-written lexicon (written seeing every family) fails the check."""
    copied = only_held_out_entries(default_lexicon())
    assert {"morning run", "weekly market", "contribution rate", "morgenlauf", "wochenmarkt"} <= copied


def test_annotate_uses_the_run_lexicon_and_reports_held_out_families_apart(tmp_path, world_lexicon, corpus):
    run = RunDir(tmp_path / "run")
    write_lexicon(world_lexicon, run.prepare.lexicon, header="test")
    assert load_lexicon(run.prepare.lexicon).digest == world_lexicon.digest
    llm = make_llm(AnnotateParams(), None, run_dir=run.path)
    assert llm.model == f"medical-lexicon-{world_lexicon.digest}" != f"medical-lexicon-{default_lexicon().digest}"
    labels = [{"id": d["id"], "label": "medical" if world_lexicon.score(d["text"])["medical"] else "not_medical",
               "gold": d["label"], "held_out": d["held_out"], "kind": d["kind"], "prompt_version": "x"}
              for d in corpus[:1500]]
    report = annotation_report(labels)
    held = [r for r in labels if r["held_out"]]
    assert report["gold_held_out"] == binary_metrics([r["gold"] for r in held], [r["label"] for r in held])
    assert report["gold_held_out"]["n"] + report["gold_development"]["n"] == report["gold"]["n"] == 1500


def test_classifier_never_trains_on_held_out_documents(tmp_path, corpus):
    path = tmp_path / "labels.jsonl"
    write_jsonl(path, [{**d, "label": d["label"]} for d in corpus[:800]])
    records, counts = load_labels(path)
    assert counts["held_out"] == sum(d["held_out"] for d in corpus[:800]) > 100
    assert len(records) == 800 - counts["held_out"] and not any(r["held_out"] for r in records)


def test_every_relation_feeds_development_and_held_out_documents(corpus):
    """Facts are not held out: a filter trained on development documents can meet every relation, so CPT can learn
    every fact the probes ask about (with a held-out relation the filter kept 0.4 % of its documents)."""
    for is_held in (False, True):
        text_of = "\n".join(d["text"] for d in corpus if d["held_out"] == is_held)
        for rel in KB.relations:
            sentences = (render(t, f, lang) for lang in LANGS for t in rel.templates[lang] for f in rel.facts)
            assert any(s in text_of for s in sentences), (rel.id, is_held)
