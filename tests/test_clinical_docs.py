"""The toy world's clinical documents: ten template families, fake patients, exact de-identification, seeded."""

from __future__ import annotations

import re

import pytest
import yaml
from lingua import Language, LanguageDetectorBuilder

from medslm.params import SYNTH_DOC_TYPES
from medslm.toyworld.clinical import (
    DATA,
    ClinicalTemplateError,
    generate_documents,
    load_clinical_templates,
)
from medslm.toyworld.knowledge import load_knowledge


@pytest.fixture(scope="module")
def docs():
    templates = load_clinical_templates()
    return generate_documents(load_knowledge(), templates.doc_types, ["de", "en"], 4, seed=0)


def test_ten_types_each_with_its_own_template_family():
    templates = load_clinical_templates()
    assert set(templates.doc_types) == set(SYNTH_DOC_TYPES) and len(templates.doc_types) >= 10
    families = {name: {v["en"] for slot in slots for v in slot} for name, slots in templates.slots.items()}
    for name, sentences in families.items():
        others = set().union(*(s for n, s in families.items() if n != name))
        assert len(sentences - others) >= len(sentences) // 2, f"{name} mostly reuses other types' sentences"
    assert len({t["de"] for t in templates.titles.values()}) == len(templates.titles)


def test_same_seed_same_documents_other_seed_others():
    kb, types = load_knowledge(), ["discharge_letter", "lab_report"]
    first = [d.text for d in generate_documents(kb, types, ["de", "en"], 5, seed=3)]
    assert first == [d.text for d in generate_documents(kb, types, ["de", "en"], 5, seed=3)]
    assert first != [d.text for d in generate_documents(kb, types, ["de", "en"], 5, seed=4)]
    # a cell's documents do not depend on which other cells are generated
    alone = [d.text for d in generate_documents(kb, ["lab_report"], ["en"], 5, seed=3)]
    assert alone == first[15:20]


def test_deidentification_removes_every_patient_detail(docs):
    for doc in docs:
        deid = doc.deidentified_text()
        details = doc.patient_details()
        assert details, doc.id
        for placeholder, original in details:
            assert original not in deid, (doc.id, original)
            assert placeholder in deid
        # only the details change: the de-identified text with each placeholder as a wildcard matches the original
        pattern = re.escape(deid)
        for placeholder in ("[NAME]", "[DATE]", "[PLACE]"):
            pattern = pattern.replace(re.escape(placeholder), "[^,;()]+?")
        assert re.fullmatch(pattern, doc.text), doc.id


def test_entities_are_in_the_text_and_documents_are_in_their_language(docs):
    detector = LanguageDetectorBuilder.from_languages(Language.GERMAN, Language.ENGLISH).build()
    expected = {"de": Language.GERMAN, "en": Language.ENGLISH}
    wrong = 0
    for doc in docs:
        for values in doc.entities().values():
            for value in values:
                assert value.lower() in doc.text.lower(), (doc.id, value)
        wrong += detector.detect_language_of(doc.text) != expected[doc.lang]
        assert doc.patient.name in doc.text or doc.patient.doctor in doc.text
    assert wrong == 0


def test_translation_pairs_are_aligned(docs):
    for doc in docs[:10]:
        de, en = doc.sentences("de"), doc.sentences("en")
        assert len(de) == len(en) == len(doc.slots)
        for i in doc.medical_slots():
            assert de[i] != en[i]


def test_unknown_doc_type_and_broken_template_file(tmp_path):
    with pytest.raises(ValueError, match="unknown document type.*'x-ray'"):
        generate_documents(load_knowledge(), ["x-ray"], ["de"], 1)
    data = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    data["doc_types"]["lab_report"]["slots"][1][0]["en"] = "Sender: {doctor}."  # lost {name} and {birth}
    bad = tmp_path / "clinical.yaml"
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ClinicalTemplateError, match=r"clinical.yaml: doc type lab_report, slot 2, variant 1: German and English"):
        load_clinical_templates(bad)
