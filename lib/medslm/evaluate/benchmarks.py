"""Medical multiple-choice benchmarks: hub loaders mapped from each dataset's real schema, local JSONL/CSV files,
k-shot contexts and the optional chat template as lm-evaluation-harness builds them, accuracy with a 95 % interval.

Schemas (checked on the dataset cards and on lm-eval 0.4.13's own task configs, ``lm_eval/tasks/<name>/``):

* ``medqa`` — ``GBaker/MedQA-USMLE-4-options-hf`` (the copy lm-eval's ``medqa_4options`` reads): ``id``, ``sent1``
  (question), ``ending0``..``ending3``, ``label`` (int 0–3); splits train/validation/test. Prompt
  ``Question: …\\nA. …\\nB. …\\nC. …\\nD. …\\nAnswer:``, choices ``A``–``D``. (The original ``GBaker/MedQA-USMLE-4-options``
  has ``question``, ``options`` {A..D}, ``answer_idx`` letter, ``meta_info``; use the -hf copy.)
* ``medmcqa`` — ``openlifescienceai/medmcqa``: ``id``, ``question``, ``opa``..``opd``, ``cop`` (ClassLabel 0–3 =
  a–d), ``choice_type``, ``exp``, ``subject_name``, ``topic_name``; the test split has no answers (``cop`` −1), so the
  validation split (4,183) is evaluated, as lm-eval does. Prompt ``Question: …\\nChoices:\\nA. …\\nAnswer:``.
* ``pubmedqa`` — ``qiaojin/PubMedQA`` config ``pqa_labeled`` (1,000 expert-labelled, one ``train`` split):
  ``pubid``, ``question``, ``context`` {``contexts`` [str], ``labels``, ``meshes``}, ``long_answer``,
  ``final_decision`` (yes/no/maybe). Prompt as lm-eval's ``pubmedqa``: ``Abstract: <contexts joined by \\n>\\nQuestion:
  …\\nAnswer:``, choices ``yes``/``no``/``maybe`` (lm-eval reads the bigbio copy of the same items).
* ``mmlu_medical`` — ``cais/mmlu``, one config per subject: ``question``, ``subject``, ``choices`` [4], ``answer``
  (ClassLabel 0–3); test split, few-shot from ``dev`` (first n). Description ``The following are multiple choice
  questions (with answers) about <subject>.\\n\\n``; prompt ``<question>\\nA. …\\nAnswer:``.
* ``mmmlu_de`` — ``openai/MMMLU`` config ``DE_DE`` (file ``test/mmlu_DE-DE.csv``, test split only): ``Question``,
  ``A``..``D``, ``Answer`` (letter), ``Subject`` (lm-eval strips a ``_test.csv…`` suffix some rows carry); few-shot
  from the test split itself (first n, the item itself excluded).
* ``global_mmlu_de`` — ``CohereForAI/Global-MMLU`` (now ``CohereLabs/``) config ``de``: ``sample_id``, ``subject``,
  ``subject_category``, ``question``, ``option_a``..``option_d``, ``answer`` (letter) and annotation fields; splits
  test (14,042) and dev (285, few-shot).

Local files (``load_local``): JSON Lines or CSV, one question per line/row, fields ``question`` (str), ``choices``
(list of str; in CSV: columns ``A``, ``B``, … in order), ``answer`` (0-based index or letter), optional ``id``,
``subject``, ``lang``. A missing field or an answer out of range raises :class:`BenchmarkError` naming file:line.

Accuracy intervals are Wilson score intervals (:func:`medslm.evaluate.intervals.wilson_interval`).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medslm.evaluate.intervals import wilson_interval
from medslm.evaluate.mcq import MCQItem, MCQResult

LETTERS = "ABCDEFGHIJ"
MMLU_MEDICAL_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                         "medical_genetics", "professional_medicine")


class BenchmarkError(ValueError):
    """A benchmark record that cannot be used; the message names the source (file:line or dataset row)."""


@dataclass
class Doc:
    """One normalised benchmark question before prompting."""

    question: str
    options: list[str]  # the answer texts
    answer: int
    id: str = ""
    subject: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """A registry entry: where the data lives, how a row maps to a :class:`Doc`, how a doc becomes a prompt."""

    name: str
    hub_path: str
    hub_config: str | None
    test_split: str
    fewshot_split: str | None
    lang: str
    to_doc: Callable[[dict[str, Any], str], Doc]
    prompt: Callable[[Doc], str]
    letter_choices: bool = True  # choices are "A".."D" (MMLU style); False: the option texts (PubMedQA)
    fewshot_sampler: str = "first_n"  # lm-eval's sampler: "first_n" or "default" (seeded random.sample)
    subjects: tuple[str, ...] = ()  # hub configs (MMLU) or subject filter (MMMLU, Global-MMLU)
    description_language: str | None = None  # None: no description (Global-MMLU); "": MMLU's; "German": MMMLU's

    def description(self, doc: Doc) -> str:
        """lm-eval's task description: MMLU ``… about anatomy.\\n\\n``, MMMLU ``… about anatomy (German).\\n\\n``."""
        if self.description_language is None:
            return ""
        language = f" ({self.description_language})" if self.description_language else ""
        subject = doc.subject.replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {subject}{language}.\n\n"


def _field(rec: dict[str, Any], name: str, where: str) -> Any:
    if name not in rec or rec[name] is None:
        raise BenchmarkError(f"{where}: field {name!r} missing (fields present: {sorted(rec)})")
    return rec[name]


def _answer_index(value: Any, n_options: int, where: str, name: str) -> int:
    """An answer given as index (int or digit string) or letter; out of range raises naming the allowed values."""
    if isinstance(value, str) and value.strip().upper() in LETTERS[:n_options] and not value.strip().isdigit():
        return LETTERS.index(value.strip().upper())
    try:
        index = int(value)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < n_options:
        raise BenchmarkError(f"{where}: {name}={value!r} is out of range; allowed: 0–{n_options - 1} or "
                             f"{', '.join(LETTERS[:n_options])}")
    return index


# ---------------------------------------------------------------------------------------------------------------
# Row → Doc, per dataset schema
# ---------------------------------------------------------------------------------------------------------------


def medqa_doc(rec: dict[str, Any], where: str) -> Doc:
    options = [str(_field(rec, f"ending{i}", where)) for i in range(4)]
    return Doc(str(_field(rec, "sent1", where)), options, _answer_index(_field(rec, "label", where), 4, where, "label"),
               str(rec.get("id", "")))


def medmcqa_doc(rec: dict[str, Any], where: str) -> Doc:
    options = [str(_field(rec, key, where)) for key in ("opa", "opb", "opc", "opd")]
    return Doc(str(_field(rec, "question", where)), options, _answer_index(_field(rec, "cop", where), 4, where, "cop"),
               str(rec.get("id", "")), str(rec.get("subject_name") or ""))


PUBMEDQA_DECISIONS = ["yes", "no", "maybe"]


def pubmedqa_doc(rec: dict[str, Any], where: str) -> Doc:
    context = _field(rec, "context", where)
    if not isinstance(context, dict) or "contexts" not in context:
        raise BenchmarkError(f"{where}: field 'context' must be an object with 'contexts' (a list of str)")
    decision = _field(rec, "final_decision", where)
    if decision not in PUBMEDQA_DECISIONS:
        raise BenchmarkError(f"{where}: final_decision={decision!r}; allowed: {PUBMEDQA_DECISIONS}")
    return Doc(str(_field(rec, "question", where)), list(PUBMEDQA_DECISIONS), PUBMEDQA_DECISIONS.index(decision),
               str(rec.get("pubid", "")), extra={"abstract": "\n".join(context["contexts"])})


def mmlu_doc(rec: dict[str, Any], where: str) -> Doc:
    options = [str(c) for c in _field(rec, "choices", where)]
    return Doc(str(_field(rec, "question", where)), options,
               _answer_index(_field(rec, "answer", where), len(options), where, "answer"), "",
               str(rec.get("subject", "")))


def mmmlu_doc(rec: dict[str, Any], where: str) -> Doc:
    options = [str(_field(rec, key, where)) for key in "ABCD"]
    subject = str(rec.get("Subject", ""))
    for marker in ("_test.csv", "_test-"):  # lm-eval's _normalize_subject_name
        subject = subject.split(marker)[0]
    return Doc(str(_field(rec, "Question", where)), options,
               _answer_index(_field(rec, "Answer", where), 4, where, "Answer"), str(rec.get("Unnamed: 0", "")), subject)


def global_mmlu_doc(rec: dict[str, Any], where: str) -> Doc:
    options = [str(_field(rec, f"option_{key}", where)) for key in "abcd"]
    return Doc(str(_field(rec, "question", where)), options,
               _answer_index(_field(rec, "answer", where), 4, where, "answer"), str(rec.get("sample_id", "")),
               str(rec.get("subject", "")))


def local_doc(rec: dict[str, Any], where: str) -> Doc:
    options = _field(rec, "choices", where)
    if not isinstance(options, list) or len(options) < 2:
        raise BenchmarkError(f"{where}: field 'choices' must be a list of at least 2 strings, got {options!r}")
    return Doc(str(_field(rec, "question", where)), [str(o) for o in options],
               _answer_index(_field(rec, "answer", where), len(options), where, "answer"), str(rec.get("id", "")),
               str(rec.get("subject", "")), {"lang": rec["lang"]} if "lang" in rec else {})


# ---------------------------------------------------------------------------------------------------------------
# Doc → prompt text (lm-eval's doc_to_text of each task)
# ---------------------------------------------------------------------------------------------------------------


def _lettered(options: Sequence[str]) -> str:
    return "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(options))


def mmlu_prompt(doc: Doc) -> str:
    return doc.question.strip() + "\n" + _lettered(doc.options) + "Answer:"


def medqa_prompt(doc: Doc) -> str:
    return f"Question: {doc.question}\n{_lettered(doc.options)}Answer:"


def medmcqa_prompt(doc: Doc) -> str:
    return f"Question: {doc.question}\nChoices:\n{_lettered(doc.options)}Answer:"


def pubmedqa_prompt(doc: Doc) -> str:
    return f"Abstract: {doc.extra['abstract']}\nQuestion: {doc.question}\nAnswer:"


REGISTRY: dict[str, Benchmark] = {
    "medqa": Benchmark("medqa", "GBaker/MedQA-USMLE-4-options-hf", None, "test", "train", "en", medqa_doc,
                       medqa_prompt, fewshot_sampler="default"),
    "medmcqa": Benchmark("medmcqa", "openlifescienceai/medmcqa", None, "validation", "train", "en", medmcqa_doc,
                         medmcqa_prompt, fewshot_sampler="default"),
    "pubmedqa": Benchmark("pubmedqa", "qiaojin/PubMedQA", "pqa_labeled", "train", None, "en", pubmedqa_doc,
                          pubmedqa_prompt, letter_choices=False, fewshot_sampler="default"),
    "mmlu_medical": Benchmark("mmlu_medical", "cais/mmlu", None, "test", "dev", "en", mmlu_doc, mmlu_prompt,
                              subjects=MMLU_MEDICAL_SUBJECTS, description_language=""),
    "mmmlu_de": Benchmark("mmmlu_de", "openai/MMMLU", "DE_DE", "test", "test", "de", mmmlu_doc, mmlu_prompt,
                          subjects=MMLU_MEDICAL_SUBJECTS, description_language="German"),
    "global_mmlu_de": Benchmark("global_mmlu_de", "CohereForAI/Global-MMLU", "de", "test", "dev", "de",
                                global_mmlu_doc, mmlu_prompt, subjects=MMLU_MEDICAL_SUBJECTS),
    "local": Benchmark("local", "", None, "", None, "", local_doc, mmlu_prompt),
}


def benchmark(name: str) -> Benchmark:
    if name not in REGISTRY:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def docs_from_records(bench: Benchmark, records: Iterable[tuple[str, dict[str, Any]]]) -> list[Doc]:
    """Docs from ``(where, record)`` pairs (``where`` = ``file:line`` or ``dataset[split] row n``); the subject
    filter of MMMLU/Global-MMLU keeps only the registry's subjects."""
    docs = [bench.to_doc(rec, where) for where, rec in records]
    if bench.subjects and bench.name in ("mmmlu_de", "global_mmlu_de"):
        docs = [d for d in docs if d.subject in bench.subjects]
    return docs


def load_local(path: str | Path) -> list[Doc]:
    """Questions of a local JSONL or CSV file in the documented schema (module docstring)."""
    from medslm.rundir import JsonlError, iter_jsonl_numbered

    path = Path(path)
    if path.suffix.lower() == ".csv":
        return [local_doc(rec, f"{path}:{line}") for line, rec in _csv_rows(path)]
    try:
        return [local_doc(rec, f"{path}:{line}") for line, rec in iter_jsonl_numbered(path)]
    except JsonlError as e:
        raise BenchmarkError(str(e)) from e


def _csv_rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        letters = [c for c in LETTERS if c in (reader.fieldnames or [])]
        for row in reader:
            rec: dict[str, Any] = {k: v for k, v in row.items() if k not in letters and v not in (None, "")}
            if letters:
                rec["choices"] = [row[c] for c in letters if row.get(c) not in (None, "")]
            yield reader.line_num, rec


def load_hub(name: str, split: str | None = None, limit: int | None = None, revision: str | None = None) -> list[Doc]:
    """Download (or read from the HF cache) a registry benchmark with ``datasets.load_dataset``: network or cache
    needed, never called in tests. MMLU loads one config per medical subject."""
    import datasets

    bench = benchmark(name)
    split = split or bench.test_split
    configs = list(bench.subjects) if bench.name == "mmlu_medical" else [bench.hub_config]
    docs: list[Doc] = []
    for config in configs:
        data = datasets.load_dataset(bench.hub_path, config, split=split, revision=revision)
        rows = ((f"{bench.hub_path}[{config or 'default'}/{split}] row {i}", dict(rec)) for i, rec in enumerate(data))
        docs += docs_from_records(bench, rows)
    return docs[:limit] if limit else docs


# ---------------------------------------------------------------------------------------------------------------
# Prompts: k-shot, chat template (lm-eval's fewshot_context)
# ---------------------------------------------------------------------------------------------------------------


def fewshot_examples(bench: Benchmark, docs: Sequence[Doc], pool: Sequence[Doc], k: int,
                     seed: int = 1234) -> list[list[Doc]]:
    """The k examples of each doc, as lm-eval draws them: ``first_n`` takes the pool's first k (skipping the doc
    itself); ``default`` draws ``random.Random(seed).sample`` per doc in order (k+1 and the doc removed when the
    pool is the evaluated split). lm-eval's ``fewshot_random_seed`` default is 1234."""
    if k == 0:
        return [[] for _ in docs]
    if len(pool) < k:
        raise BenchmarkError(f"{bench.name}: {k}-shot needs {k} few-shot examples, the pool has {len(pool)}")
    rng = random.Random(seed)
    same_split = pool is docs
    out = []
    for doc in docs:
        if bench.fewshot_sampler == "first_n":
            out.append([d for d in pool if d is not doc][:k])
        elif same_split:
            out.append([d for d in rng.sample(list(pool), k + 1) if d is not doc][:k])
        else:
            out.append(rng.sample(list(pool), k))
    return out


def _choices(bench: Benchmark, doc: Doc) -> list[str]:
    return list(LETTERS[: len(doc.options)]) if bench.letter_choices else list(doc.options)


def build_items(bench: Benchmark, docs: Sequence[Doc], k: int = 0, pool: Sequence[Doc] | None = None,
                seed: int = 1234, tokenizer: Any = None, chat_template: bool = False) -> list[MCQItem]:
    """MCQ items with lm-eval's contexts: description + k solved examples (``q + " " + answer``, joined and ended
    by ``\\n\\n``) + the question; with ``chat_template`` the same parts become messages (system = description,
    one user/assistant turn per example, the question as last user turn) rendered by the tokenizer with the
    generation prompt, and the choice follows without delimiter (lm-eval's ``apply_chat_template``)."""
    shots = fewshot_examples(bench, docs, pool if pool is not None else docs, k, seed)
    items = []
    for doc, examples in zip(docs, shots, strict=True):
        description = bench.description(doc)
        if chat_template:
            if tokenizer is None:
                raise ValueError("chat_template=True needs the tokenizer")
            messages = [{"role": "system", "content": description}] if description else []
            for ex in examples:
                messages += [{"role": "user", "content": bench.prompt(ex)},
                             {"role": "assistant", "content": _choices(bench, ex)[ex.answer]}]
            messages.append({"role": "user", "content": bench.prompt(doc)})
            context = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            delimiter = ""
        else:
            solved = "".join(bench.prompt(ex) + " " + _choices(bench, ex)[ex.answer] + "\n\n" for ex in examples)
            context = description + solved + bench.prompt(doc)
            delimiter = " "
        items.append(MCQItem(context, _choices(bench, doc), doc.answer, delimiter, doc.id,
                             {"benchmark": bench.name, "subject": doc.subject, "lang": bench.lang or
                              doc.extra.get("lang", "")}))
    return items


def accuracy_with_interval(results: Sequence[MCQResult]) -> dict[str, Any]:
    """``acc``/``acc_norm`` with Wilson 95 % intervals and ``n``."""
    n = len(results)
    out: dict[str, Any] = {"n": n}
    for key, hits in (("acc", sum(r.correct for r in results)), ("acc_norm", sum(r.correct_norm for r in results))):
        low, high = wilson_interval(hits, n)
        out[key] = hits / n if n else float("nan")
        out[f"{key}_ci95"] = [low, high]
    return out
