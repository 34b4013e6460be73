"""07_evaluate as one recipe: ``variants → benchmarks → generate → judge → table``.

Every model of the run (instruct, CPT, selected merge, SFT, DPO) and any comparator is scored the same way:
multiple-choice benchmarks through the lm-eval-identical scorer, 05_synthesize's held-out clinical tasks answered
greedily and scored per task, and pairwise win-rates from a judge (both orders asked). A model that cannot be loaded
becomes a failed row with its reason; the others still run. Per-item records go to ``items/`` for 08.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medslm.evaluate.benchmarks import accuracy_with_interval, benchmark, build_items, load_hub, load_local
from medslm.evaluate.generative import score_record, task_score
from medslm.evaluate.judge import judge_pairs, reference_judge, win_rates
from medslm.evaluate.mcq import MCQItem, score_mcq
from medslm.evaluate.probes import probe_accuracy
from medslm.models import ModelRef, base_model_ref, load_model, load_tokenizer, resolve_device
from medslm.params import EvaluateParams, RunParams
from medslm.rundir import RunDir, read_json, read_jsonl, write_json, write_jsonl
from medslm.stats import seeded_sample


@dataclass
class Variant:
    """One model to evaluate and what happened to it."""

    label: str
    model: ModelRef
    scores: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def headline(self) -> dict[str, float | str | None]:
        """Each benchmark's accuracy and the task score, rounded — or the error of a failed row."""
        if self.error:
            return {"error": self.error}
        out: dict[str, float | str | None] = {k: round(v["acc"], 3) for k, v in self.scores.items()
                                              if isinstance(v, dict) and "acc" in v}
        task = self.scores.get("task_score")
        out["task_score"] = None if task is None else round(task, 3)
        return out


def run_variants(run: RunDir, params: EvaluateParams) -> list[Variant]:
    """The run's model folders that exist (in recipe order), then the comparators."""
    folders = {"cpt": run.cpt.model, "merge": run.merge.selected, "sft": run.align.model("sft"),
               "dpo": run.align.model("dpo")}
    out = []
    for label in params.variants:
        if label == "instruct":
            out.append(Variant(label, base_model_ref(run.path)))
        elif (folders[label] / "config.json").is_file():
            out.append(Variant(label, ModelRef(str(folders[label]))))
    out += [Variant(label, ModelRef(ref)) for label, ref in params.comparators.items()]
    return out


class EvaluateRecipe:
    """Benchmarks, held-out tasks and win-rates for every variant of a run."""

    def __init__(self, params: EvaluateParams, run_dir: str | Path, settings: RunParams | None = None):
        self.params = params
        self.run_dir = RunDir(run_dir)
        self.out = self.run_dir.evaluate
        self.settings = settings or RunParams()
        self.device = resolve_device(self.settings.device)
        self.variants = run_variants(self.run_dir, params)
        self.items: dict[str, list[MCQItem]] = {}
        self.prompts: list[dict[str, Any]] = []
        self.answers: dict[str, list[str]] = {}
        self.win_rates: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}

    @classmethod
    def from_context(cls, ctx: Any) -> EvaluateRecipe:
        return cls(ctx.params, ctx.rundir.path, ctx.run)

    # ------------------------------------------------------------------------------------------------ inputs

    def load_benchmarks(self, tokenizer: Any = None) -> dict[str, int]:
        """Each benchmark's items (seeded sample of ``benchmark_limit``); returns the counts."""
        for name in self.params.benchmarks:
            if name == "toy_probes":
                records = read_jsonl(self.run_dir.prepare.probes)
                items = [MCQItem.from_record(r) for r in records]
            else:
                docs = load_local(name) if name.endswith((".jsonl", ".csv")) else load_hub(name)
                bench = benchmark("local" if name.endswith((".jsonl", ".csv")) else name)
                items = build_items(bench, docs, k=self.params.num_fewshot, tokenizer=tokenizer,
                                    chat_template=self.params.chat_template)
            items = seeded_sample(items, self.params.benchmark_limit, f"benchmark:{self.settings.seed}")
            self.items[Path(name).stem if name.endswith((".jsonl", ".csv")) else name] = items
        return {name: len(items) for name, items in self.items.items()}

    def load_prompts(self) -> int:
        """A seeded sample of 05_synthesize's held-out test split (documents never trained on)."""
        test = self.run_dir.synthesize.sft / "test.jsonl"
        if self.params.generative_limit == 0 or not test.is_file():
            return 0
        rows = read_jsonl(test, required=("messages", "task"))
        rows = seeded_sample(rows, self.params.generative_limit, f"generative:{self.settings.seed}")
        schemas = read_json(self.run_dir.synthesize.schemas) if self.run_dir.synthesize.schemas.is_file() else {}
        self.prompts = [{**row, "schema": schemas.get(row["task"]) if row.get("format") == "json" else None}
                        for row in rows]
        return len(self.prompts)

    # ---------------------------------------------------------------------------------------------- per model

    def evaluate_variant(self, variant: Variant) -> dict[str, Any]:
        """Benchmarks and held-out answers of one model; a load or scoring failure marks the row failed."""
        start = time.perf_counter()
        try:
            tokenizer = load_tokenizer(variant.model.ref, **variant.model.hub_kwargs())
            model = load_model(variant.model.ref, device=self.device, **variant.model.hub_kwargs())
            for name, items in self.items.items():
                results = score_mcq(model, tokenizer, items, batch_size=self.params.mcq_batch_size)
                variant.scores[name] = accuracy_with_interval(results)
                if name == "toy_probes":
                    variant.scores[name]["by_group"] = {g: a for g, a in probe_accuracy(results).items()
                                                        if g != "detail"}
                write_jsonl(self.out.items / f"{variant.label}.{name}.mcq.jsonl", (r.record() for r in results))
            if self.prompts:
                self._generate(variant, model, tokenizer)
        except Exception as err:  # noqa: BLE001 - a failed model is a row, not the end of the step
            variant.error = f"{type(err).__name__}: {err}"
            (self.out.items / f"{variant.label}.error.txt").parent.mkdir(parents=True, exist_ok=True)
            (self.out.items / f"{variant.label}.error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        self.timings[f"{variant.label}_s"] = round(time.perf_counter() - start, 2)
        return variant.scores

    def _generate(self, variant: Variant, model: Any, tokenizer: Any) -> None:
        from medslm.llm import TransformersBackend

        backend = TransformersBackend(variant.model.ref, device=self.device, batch_size=self.params.gen_batch_size,
                                      max_new_tokens=self.params.max_new_tokens, model=model, tokenizer=tokenizer)
        answers = backend.generate([row["messages"][:-1] for row in self.prompts])
        self.answers[variant.label] = answers
        records, totals = [], {}
        for row, answer in zip(self.prompts, answers, strict=True):
            reference = row["messages"][-1]["content"]
            scores = {**score_record(answer, reference, row["schema"]),
                      **task_score(answer, reference, row.get("format"), row["schema"])}
            n_tokens = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
            records.append({"variant": variant.label, "id": row.get("id"), "task": row["task"],
                            "format": row.get("format"), "prompt_language": row.get("language"),
                            "answer_language": row.get("answer_language"), "prompt": row["messages"][-2]["content"],
                            "answer": answer, "reference": reference, "schema": row["schema"], "scores": scores,
                            "truncated": n_tokens >= self.params.max_new_tokens})
            for key, value in scores.items():
                totals.setdefault(row["task"], {}).setdefault(key, []).append(value)
        write_jsonl(self.out.items / f"{variant.label}.generations.jsonl", records)
        variant.scores["tasks"] = {task: {k: sum(v) / len(v) for k, v in scores.items()}
                                   for task, scores in sorted(totals.items())}
        per_task = [s["score"] for s in variant.scores["tasks"].values()]  # the mean of the tasks' mean scores
        variant.scores["task_score"] = sum(per_task) / len(per_task) if per_task else None

    # ------------------------------------------------------------------------------------------------- judge

    def judge_llm(self):
        """The judge behind the reply cache: the toy world's reference judge, a server, or a local model."""
        from medslm.llm import LLM, FunctionBackend, OpenAIBackend, TransformersBackend

        params = self.params
        if params.judge == "reference":
            backend: Any = FunctionBackend(reference_judge, name="reference-judge", model="toyworld")
        elif params.judge == "openai":
            backend = OpenAIBackend(params.judge_base_url, params.judge_model, api_key_env=params.api_key_env)
        else:
            backend = TransformersBackend(params.judge_model, device=self.device, max_new_tokens=16)
        return LLM(backend, self.out.path / "judge_cache")

    def judge(self) -> dict[str, dict[str, Any]]:
        """Win-rates of every ``model:baseline`` comparison whose two answers exist (position-swapped)."""
        if self.params.judge == "none":
            return {}
        llm = self.judge_llm()
        for pair in self.params.comparisons:
            model, baseline = pair.split(":")
            if model not in self.answers or baseline not in self.answers:
                continue
            pairs = [{"id": row.get("id", str(i)), "question": row["messages"][-2]["content"], "lang": row.get("language", "en"),
                      "reference": row["messages"][-1]["content"], "model": self.answers[model][i],
                      "baseline": self.answers[baseline][i]} for i, row in enumerate(self.prompts)]
            outcomes = judge_pairs(llm, pairs)
            write_jsonl(self.out.items / f"{model}_vs_{baseline}.judge.jsonl", (o.record() for o in outcomes))
            self.win_rates[pair] = win_rates(outcomes, n_boot=self.params.bootstrap, seed=self.settings.seed)
        return self.win_rates

    # ------------------------------------------------------------------------------------------------ output

    def table(self) -> list[dict[str, Any]]:
        """One row per variant: each benchmark's accuracy (+ interval), task score, win-rate vs each baseline."""
        rows = []
        for v in self.variants:
            row: dict[str, Any] = {"variant": v.label, "model": v.model.ref, "status": "failed" if v.error else "ok"}
            if v.error:
                row["error"] = v.error
            for name in self.items:
                if name in v.scores:
                    row[name] = v.scores[name]["acc"]
                    row[f"{name}_ci95"] = v.scores[name]["acc_ci95"]
                    row.update({f"{name}_{g}": a for g, a in v.scores[name].get("by_group", {}).items()})
            row["task_score"] = v.scores.get("task_score")
            for pair, rates in self.win_rates.items():
                model, baseline = pair.split(":")
                if model == v.label:
                    row[f"win_rate_vs_{baseline}"] = rates["win_rate"]
                    row[f"win_rate_vs_{baseline}_ci95"] = rates["win_rate_ci95"]
                    row[f"lc_win_rate_vs_{baseline}"] = rates["lc_win_rate"]
            rows.append(row)
        return rows

    def finish(self) -> dict[str, Any]:
        """Write table.json, metrics.json and timings.json; returns the metrics."""
        from medslm.notebook import write_step_metrics

        table = self.table()
        write_json(self.out.table, table)
        metrics = {"variants": {v.label: {"model": v.model.as_dict(), "error": v.error, "scores": v.scores}
                                for v in self.variants},
                   "benchmarks": {name: len(items) for name, items in self.items.items()},
                   "generative_prompts": len(self.prompts), "win_rates": self.win_rates, "table": table}
        write_step_metrics(self.out, "evaluate", self.params, metrics)
        write_json(self.out.path / "timings.json", self.timings)
        return metrics

    def run(self) -> dict[str, Any]:
        """The whole step, as the notebook runs it."""
        self.load_benchmarks()
        self.load_prompts()
        for variant in self.variants:
            self.evaluate_variant(variant)
        self.judge()
        return self.finish()

