"""The 05_synthesize recipe, one path for the notebook (cell by cell) and for scripts (``run_step``):
``setup`` (documents, tasks, schemas, grid) → ``teach`` → ``filter_examples`` → ``make_pairs`` → ``save``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medslm.llm import LLM
from medslm.rundir import SynthesizeDir, write_json, write_jsonl
from medslm.synthesize.filters import FILTERS, LanguageFilter
from medslm.synthesize.funnel import apply_filters, fault_report
from medslm.synthesize.grid import PROMPT_VERSION, Example, build_grid, grid_table
from medslm.synthesize.judge import reference_judge_backend
from medslm.synthesize.output import split_documents, write_outputs
from medslm.synthesize.pairs import PreferencePair, fault_pairs, model_pairs
from medslm.synthesize.tasks import Task, load_schemas, make_tasks
from medslm.synthesize.teachers import llm_answers, make_teacher_llm, programmatic_answers
from medslm.toyworld.clinical import ClinicalDocument, generate_documents
from medslm.toyworld.knowledge import KnowledgeBase, load_knowledge


@dataclass
class Synthesis:
    """Everything the step makes, as it goes."""

    kb: KnowledgeBase
    docs: list[ClinicalDocument]
    tasks: dict[str, Task]
    schemas: dict[str, dict[str, Any]]
    examples: list[Example]
    held_out: set[str]
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    teacher_stats: dict[str, Any] = field(default_factory=dict)
    funnel: dict[str, Any] = field(default_factory=dict)
    pairs: list[PreferencePair] = field(default_factory=list)

    def kept(self, split: str | None = None) -> list[Example]:
        out = [e for e in self.examples if e.kept]
        if split == "train":
            return [e for e in out if e.doc_id not in self.held_out]
        if split == "test":
            return [e for e in out if e.doc_id in self.held_out]
        return out


def setup(params: Any, seed: int = 0) -> Synthesis:
    """Check tasks, document types and schemas (errors before any generation), then build documents and grid."""
    t0 = time.perf_counter()
    kb = load_knowledge()
    tasks = make_tasks(list(params.tasks), kb, seed)
    schemas = load_schemas(tasks, dict(params.schema_files))
    docs = generate_documents(kb, list(params.doc_types), list(params.languages), params.examples_per_cell, seed)
    examples = build_grid(docs, tasks, list(params.formats), schemas, seed, params.json_prompt,
                          params.tasks_per_document)
    held_out = split_documents(docs, params.test_fraction, seed)
    return Synthesis(kb, docs, tasks, schemas, examples, held_out, seed, {"setup_s": time.perf_counter() - t0})


def fault_rates(params: Any) -> dict[str, float]:
    return {"wrong_language": params.wrong_language_rate, "mixed_language": params.mixed_language_rate,
            "verbose": params.verbose_rate, "wrong_fact": params.wrong_fact_rate,
            "invalid_json": params.invalid_json_rate, "near_duplicate": params.near_duplicate_rate}


def teach(synth: Synthesis, params: Any, cache_dir: Path | None = None, *, device: str = "auto",
          progress: bool = False) -> dict[str, Any]:
    """Answer every prompt: exact answers with injected faults (programmatic) or an LLM behind the reply cache."""
    t0 = time.perf_counter()
    if params.teacher == "programmatic":
        synth.examples = programmatic_answers(synth.examples, synth.tasks, synth.kb, fault_rates(params), synth.seed)
        stats: dict[str, Any] = {"teacher": "programmatic", "failed": 0}
    else:
        llm = make_teacher_llm(params, cache_dir / "teacher" if cache_dir else None, device=device, seed=synth.seed)
        stats = {"teacher": f"{params.teacher}:{params.model}",
                 **llm_answers(synth.examples, llm, params.parse_retries, progress), "cached": llm.stats["cached"]}
        llm.close()
    synth.timings["teach_s"] = time.perf_counter() - t0
    synth.teacher_stats = stats
    return stats


def make_judge(params: Any, kb: KnowledgeBase, cache_dir: Path | None, device: str = "auto", seed: int = 0) -> LLM | None:
    if params.judge == "none":
        return None
    if params.judge == "reference":
        return LLM(reference_judge_backend(kb))
    judge_params = params.model_copy(update={"teacher": params.judge, "model": params.judge_model,
                                             "base_url": params.judge_base_url})
    return make_teacher_llm(judge_params, cache_dir / "judge" if cache_dir else None, device=device, seed=seed)


def filter_examples(synth: Synthesis, params: Any, cache_dir: Path | None = None, *, device: str = "auto",
                    progress: bool = False) -> dict[str, Any]:
    """Run the filters (language detector loaded once, restricted to the run's languages) and return the funnel."""
    t0 = time.perf_counter()
    # the run's languages (and those answers must be in), plus English: the language teachers drift into
    languages = sorted({e.answer_lang for e in synth.examples} | set(params.languages) | {"en"})
    detector = LanguageFilter(languages, params.min_sentence_words, params.max_foreign_share,
                              params.min_language_confidence) \
        if params.filter_language and len(languages) > 1 else None
    judge = make_judge(params, synth.kb, cache_dir, device, synth.seed)
    synth.funnel = apply_filters(synth.examples, params, synth.tasks, synth.schemas, detector, judge, progress)
    synth.timings["filter_s"] = time.perf_counter() - t0
    return synth.funnel


def make_pairs(synth: Synthesis, params: Any, model: str | Path | None = None, cache_dir: Path | None = None, *,
               device: str = "auto", progress: bool = False) -> list[PreferencePair]:
    """Preference pairs from the kept examples: faulty variants, plus the model's own answers if asked."""
    t0 = time.perf_counter()
    kept = [e for e in synth.kept() if e.duplicate_of is None]
    pairs = fault_pairs(kept, synth.tasks, synth.kb, list(params.rejection_kinds), params.pair_fraction, synth.seed)
    if params.model_rejections > 0:
        if model is None:
            raise ValueError("model_rejections > 0 needs a model: rejection_model or 04_merge/selected")
        model_params = params.model_copy(update={"teacher": "transformers", "model": str(model)})
        llm = make_teacher_llm(model_params, cache_dir / "model" if cache_dir else None, device=device, seed=synth.seed)
        pairs += model_pairs(kept, llm, params.model_rejections, synth.seed, progress)
    synth.pairs = pairs
    synth.timings["pairs_s"] = time.perf_counter() - t0
    return pairs


def save(synth: Synthesis, out: SynthesizeDir) -> dict[str, dict[str, int]]:
    """Write sft/, dpo/ (with cards), documents.jsonl, examples.jsonl (every example and its verdicts), schemas."""
    t0 = time.perf_counter()
    info = {"teacher": synth.teacher_stats.get("teacher", "?"), "seed": synth.seed, "prompt_version": PROMPT_VERSION,
            "filters": [f for f in FILTERS if any(e.verdicts.get(f) not in (None, "n/a") for e in synth.examples)],
            "held_out_documents": len(synth.held_out), "languages": sorted({d.lang for d in synth.docs})}
    counts = write_outputs(out.path, synth.kept(), synth.pairs, synth.held_out, info)
    write_jsonl(out.documents, ({**d.to_record(), "split": "test" if d.id in synth.held_out else "train"}
                                for d in synth.docs))
    write_jsonl(out.examples, ({**e.provenance(), "answer": e.answer, "status": e.status, "attempts": e.attempts,
                                "kept": e.kept} for e in synth.examples))
    write_json(out.schemas, synth.schemas)
    synth.timings["save_s"] = time.perf_counter() - t0
    return counts


def metrics(synth: Synthesis, counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """What the step made and what the filters caught, for metrics.json."""
    from collections import Counter

    kept_json = [e for e in synth.kept() if e.format == "json"]
    valid = sum(e.verdicts.get("json") == "pass" for e in kept_json)
    return {"grid": grid_table(synth.examples), "documents": len(synth.docs), "held_out_documents": len(synth.held_out),
            "teacher": synth.teacher_stats, "funnel_total": synth.funnel.get("total"),
            "faults": fault_report(synth.examples), "counts": counts,
            "kept_json_schema_valid": valid / len(kept_json) if kept_json else None,
            "rejections": dict(Counter(p.kind for p in synth.pairs)),
            "timings": {k: round(v, 3) for k, v in synth.timings.items()}}


def run_step(params: Any, out: SynthesizeDir, *, seed: int = 0, model: str | Path | None = None,
             device: str = "auto", progress: bool = False) -> tuple[Synthesis, dict[str, Any]]:
    """The whole step without a notebook (tests, benches): returns the synthesis and its metrics."""
    synth = setup(params, seed)
    teach(synth, params, out.cache, device=device, progress=progress)
    filter_examples(synth, params, out.cache, device=device, progress=progress)
    make_pairs(synth, params, model, out.cache, device=device, progress=progress)
    return synth, metrics(synth, save(synth, out))


def example_rows(examples: list[Example], tasks: list[str] | None = None, max_chars: int = 220) -> list[dict[str, str]]:
    """One kept example per (task, language, format) for display (document types vary): prompt excerpt and answer."""
    import random

    seen, rows = set(), []
    for e in random.Random(0).sample(examples, len(examples)):
        key = (e.task, e.prompt_lang, e.format)
        if e.kept and e.duplicate_of is None and key not in seen and (tasks is None or e.task in tasks):
            seen.add(key)
            prompt = e.messages[-1]["content"].split("\n\n")[1][:max_chars]  # the document or sentence
            rows.append({"task": e.task, "language": e.prompt_lang, "format": e.format, "doc_type": e.doc_type,
                         "prompt (excerpt)": prompt, "answer": (e.answer or "")[:max_chars]})
    return sorted(rows, key=lambda r: (r["task"], r["language"], r["format"]))


def pair_rows(pairs: list[PreferencePair], per_kind: int = 2, max_chars: int = 160) -> list[dict[str, str]]:
    """A few preference pairs of each rejection kind, for display."""
    shown: dict[str, int] = {}
    rows = []
    for pair in pairs:
        if shown.get(pair.kind, 0) < per_kind:
            shown[pair.kind] = shown.get(pair.kind, 0) + 1
            rows.append({"rejection": pair.kind, "task": pair.example.task, "language": pair.example.prompt_lang,
                         "format": pair.example.format, "chosen": (pair.example.answer or "")[:max_chars],
                         "rejected": pair.rejected[:max_chars]})
    return sorted(rows, key=lambda r: r["rejection"])
