"""Outputs in the formats trl reads directly, split by document, each folder with a dataset card.

``sft/{train,test}.jsonl``: ``messages`` (system, user, assistant) + provenance; ``dpo/{train,test}.jsonl``:
``prompt`` / ``chosen`` / ``rejected`` (conversational) + ``rejection`` + provenance. Every example of a held-out
document is in ``test`` (never in ``train``); ``datasets.load_dataset("json", data_files=...)`` loads them.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from medslm.rundir import write_jsonl, write_text
from medslm.synthesize.grid import Example
from medslm.synthesize.pairs import PreferencePair
from medslm.toyworld.clinical import ClinicalDocument

SPLITS = ("train", "test")


def split_documents(docs: list[ClinicalDocument], test_fraction: float, seed: int = 0) -> set[str]:
    """Ids of held-out documents, seeded: ``ceil(test_fraction × n)`` of each (type, language) group, but never a
    whole group; groups of one document are pooled and split the same way, so a small grid keeps a training split."""
    if test_fraction <= 0:
        return set()
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for doc in docs:
        groups[(doc.doc_type, doc.lang)].append(doc.id)

    def held_out_of(ids: list[str], salt: str) -> list[str]:
        ids = sorted(ids)
        random.Random(f"{seed}:split:{salt}").shuffle(ids)
        return ids[: min(math.ceil(test_fraction * len(ids)), len(ids) - 1)]

    held = {i for key in sorted(groups) if len(groups[key]) > 1 for i in held_out_of(groups[key], str(key))}
    singles = [ids[0] for ids in groups.values() if len(ids) == 1]
    return held | set(held_out_of(singles, "singles"))


def sft_record(example: Example) -> dict[str, Any]:
    return {"messages": [*example.messages, {"role": "assistant", "content": example.answer}],
            **example.provenance()}


def write_outputs(folder: Path, kept: list[Example], pairs: list[PreferencePair], held_out: set[str],
                  card_info: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Write sft/ and dpo/ (train + test + README.md); return the counts per folder and split."""
    counts: dict[str, dict[str, int]] = {}
    for name, records in (("sft", [(e.doc_id, sft_record(e)) for e in kept]),
                          ("dpo", [(p.example.doc_id, p.record()) for p in pairs])):
        by_split = {"train": [r for d, r in records if d not in held_out], "test": [r for d, r in records if d in held_out]}
        counts[name] = {split: write_jsonl(folder / name / f"{split}.jsonl", rows) for split, rows in by_split.items()}
        write_text(folder / name / "README.md", dataset_card(name, by_split, card_info))
    return counts


def dataset_card(name: str, by_split: dict[str, list[dict[str, Any]]], info: dict[str, Any]) -> str:
    """A dataset card as on the Hugging Face hub: YAML header (languages, configs, splits) + what is in it."""
    rows = [r for split in SPLITS for r in by_split[split]]
    header = {
        "language": sorted({r["language"] for r in rows}) or list(info.get("languages", [])),
        "license": "apache-2.0",
        "pretty_name": f"medslm synthetic clinical {'instructions' if name == 'sft' else 'preference pairs'}",
        "task_categories": ["text-generation"],
        "tags": ["medical", "clinical", "synthetic", "medslm", name],
        "size_categories": ["1K<n<10K" if len(rows) < 10_000 else "10K<n<100K"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"{s}.jsonl"} for s in SPLITS]}],
    }
    per_task = Counter((r["task"], r["language"]) for r in rows)
    table = "\n".join(f"| {t} | {lang} | {n} |" for (t, lang), n in sorted(per_task.items()))
    fields = ("`messages` (system, user, assistant)" if name == "sft" else
              "`prompt` (system, user), `chosen` and `rejected` (assistant), `rejection` (the kind of bad answer)")
    extra = ""
    if name == "dpo":
        kinds = Counter(r["rejection"] for r in rows)
        extra = "\n## Rejections\n\n" + "\n".join(f"- {k}: {n}" for k, n in sorted(kinds.items())) + "\n"
    return (f"---\n{yaml.safe_dump(header, sort_keys=False, allow_unicode=True)}---\n\n"
            f"# {header['pretty_name']}\n\n"
            f"Made by medslm's 05_synthesize from the toy world's clinical documents (teacher: {info['teacher']}, "
            f"seed {info['seed']}, prompts {info['prompt_version']}). Answers are computed from the knowledge base "
            f"(or given by the teacher) and passed the filters {', '.join(info['filters'])}.\n\n"
            f"Splits: train {len(by_split['train'])}, test {len(by_split['test'])}; the test split holds every "
            f"example of {info['held_out_documents']} held-out documents (split by document, never in train).\n\n"
            f"Fields: {fields}; provenance: `id`, `doc_id`, `task`, `doc_type`, `language` (of the prompt), "
            f"`answer_language`, `format` (text | json), `teacher`, `prompt_version`, `prompt_hash`, `faults` "
            f"(injected, ground truth), `duplicate_of`, `filters` (verdict of each filter), `reference` (the exact "
            f"answer from the world).\n\n"
            f"Load with `datasets.load_dataset(\"json\", data_files={{\"train\": \"train.jsonl\", \"test\": "
            f"\"test.jsonl\"}})`.\n\n| task | language | examples |\n|---|---|---|\n{table}\n{extra}")
