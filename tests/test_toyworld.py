"""The toy world: knowledge base, corpus generator, held-out templates, probes, chat examples, tokenizer."""

import json
import re

import pytest

from medslm.toyworld import text
from medslm.toyworld.chat import chat_examples, qa_texts, render_chats
from medslm.toyworld.corpus import GOLD, CorpusSpec, general_documents, generate_corpus
from medslm.toyworld.knowledge import LANGS, heldout_question, heldout_template, load_knowledge, render
from medslm.toyworld.probes import chat_probes, cloze_probes, heldout_texts
from medslm.toyworld.tokenizer import ASSISTANT, END, train_tokenizer

KB = load_knowledge()


def test_knowledge_base_size_and_shape():
    for domain in ("medical", "general"):
        rels = [r for r in KB.relations if r.domain == domain]
        assert len(rels) >= 6
        assert sum(len(r.facts) for r in rels) >= 150
        for r in rels:
            for lang in LANGS:
                assert len(r.templates[lang]) >= 3, (r.id, lang)
                assert len(r.objects(lang)) >= 4, (r.id, lang)
                assert all(f.s[lang] and f.o[lang] for f in r.facts)


def _all_sentences(docs):
    return {s for d in docs for line in d.split("\n") for s in line.split(". ")}


def test_heldout_template_never_in_training_text():
    docs = [d["text"] for d in generate_corpus(CorpusSpec(4000, seed=3))] + general_documents(2000, 3)
    joined = "\n".join(docs)
    checked = 0
    for rel in KB.relations:
        for fact in rel.facts:
            for lang in LANGS:
                held = rel.templates[lang][heldout_template(rel, fact, lang, 3)]
                sentence = render(held, fact, lang)
                assert sentence not in joined, sentence
                checked += 1
    assert checked == 2 * len(KB.facts())
    # and the other templates do appear (the corpus is big enough to contain many of them)
    others = [render(t, f, "en") for r in KB.relations for f in r.facts[:3] for i, t in enumerate(r.templates["en"])
              if i != heldout_template(r, f, "en", 3)]
    assert sum(s.rstrip(".") in joined for s in others) > len(others) * 0.5


def test_corpus_deterministic_for_a_seed_and_different_across_seeds():
    a = [json.dumps(d) for d in generate_corpus(CorpusSpec(300, seed=1))]
    b = [json.dumps(d) for d in generate_corpus(CorpusSpec(300, seed=1))]
    c = [json.dumps(d) for d in generate_corpus(CorpusSpec(300, seed=2))]
    assert a == b and a != c


def test_corpus_mix_and_gold_labels():
    docs = list(generate_corpus(CorpusSpec(4000, de_fraction=0.7, medical_fraction=0.4, ambiguous_fraction=0.2,
                                           adversarial_fraction=0.05, seed=0)))
    share = lambda key, value: sum(d[key] == value for d in docs) / len(docs)  # noqa: E731
    assert share("lang", "de") == pytest.approx(0.7, abs=0.03)
    assert share("kind", "medical") == pytest.approx(0.4, abs=0.03)
    assert share("kind", "ambiguous") == pytest.approx(0.2, abs=0.03)
    assert share("kind", "adversarial") == pytest.approx(0.05, abs=0.015)
    assert all(d["label"] == GOLD[d["kind"]] for d in docs)
    adversarial = [d for d in docs if d["kind"] == "adversarial"]
    assert all(any(a in d["text"] for a in text.ADVERSARIAL[d["lang"]]) for d in adversarial)
    medical_objects = {f.o["en"] for f in KB.facts("medical")} | {f.o["de"] for f in KB.facts("medical")}
    general = [d["text"] for d in docs if d["kind"] == "general"]
    assert not any(f" {o}." in t for t in general for o in medical_objects if len(o) > 6)


def test_bad_mix_is_rejected():
    with pytest.raises(ValueError, match="sum to"):
        CorpusSpec(10, medical_fraction=0.8, ambiguous_fraction=0.3)


def test_general_documents_have_no_medical_facts():
    medical_subjects = {f.s[lang] for f in KB.facts("medical") for lang in LANGS if len(f.s[lang]) > 5}
    docs = general_documents(500, seed=0)
    pattern = re.compile(r"(?<![-\w])(" + "|".join(re.escape(s) for s in medical_subjects) + r")\b")  # not "four-stroke"
    assert not any(pattern.search(d) for d in docs)


def test_cloze_probes(tiny_tokenizer):
    probes = cloze_probes(KB, seed=0)
    assert len(probes) == 2 * len(KB.facts())
    for p in probes:
        assert len(p["choices"]) == 4 and len(set(p["choices"])) == 4
        assert 0 <= p["gold"] < 4
    by_id = {p["id"]: p for p in probes}
    rel = KB.relation("country_capital")
    fact = rel.facts[0]
    probe = by_id[f"cloze:{fact.key}:de"]
    held = rel.templates["de"][heldout_template(rel, fact, "de", 0)]
    assert render(held, fact, "de") == f"{probe['context']} {probe['choices'][probe['gold']]}."
    # the gold position is spread over the four slots
    golds = [p["gold"] for p in probes]
    assert min(golds.count(i) for i in range(4)) > len(probes) / 8


def test_chat_probes_and_examples_use_disjoint_questions(tiny_tokenizer):
    probes = chat_probes(KB, tiny_tokenizer, seed=0)
    assert len(probes) == 2 * len(KB.facts("general"))
    assert all(p["context"].endswith(ASSISTANT) for p in probes)
    chats = chat_examples(KB, 3000, seed=0)
    asked = {c["messages"][0]["content"] for c in chats}
    assert not asked & {p["question"] for p in probes}
    kinds = {c["kind"] for c in chats}
    assert kinds == {"fact", "small_talk", "instruction"}
    rendered = render_chats(tiny_tokenizer, chats[:2])
    assert all(END in r and ASSISTANT in r for r in rendered)


def test_heldout_question_differs_by_seed():
    rel = KB.relation("country_capital")
    picks = {heldout_question(rel, f, "en", s) for f in rel.facts for s in range(3)}
    assert len(picks) == len(rel.questions["en"])


def test_qa_texts_are_medical_and_skip_heldout_questions():
    qa = qa_texts(KB, seed=0)
    rel = KB.relation("drug_indication")
    assert len(qa) == sum(len(r.facts) * (len(r.questions[lang]) - 1) for r in KB.relations
                          if r.domain == "medical" for lang in LANGS)
    assert any(rel.facts[0].o["en"] in q for q in qa)


def test_heldout_texts_cover_every_fact():
    texts = heldout_texts(KB, seed=0)
    assert len(texts) == 2 * len(KB.facts())
    assert {t["domain"] for t in texts} == {"medical", "general"}


def test_tokenizer_has_chat_tokens_and_consistent_word_tokens():
    tok = train_tokenizer(["Die Hauptstadt von Russland ist Moskau."] * 50, vocab_size=300)
    chat = tok.apply_chat_template([{"role": "user", "content": "Hauptstadt?"},
                                    {"role": "assistant", "content": "Moskau"}], tokenize=False)
    assert tok.convert_tokens_to_ids(END) != tok.unk_token_id
    ids_doc = tok.encode("Die Hauptstadt ist Moskau", add_special_tokens=False)
    ids_chat = tok.encode(chat, add_special_tokens=False)
    # the answer's first word has the same token as inside running text
    assert ids_doc[-1] in ids_chat
    # and a sentence-initial subject gets the same token as mid-sentence
    assert tok.encode("Moskau", add_special_tokens=False) == tok.encode(" Moskau", add_special_tokens=False)[-1:]
