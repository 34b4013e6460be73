"""04_merge as one recipe, the same in the notebook (cell by cell) and as a script (``python -m medslm.merge``)::

    recipe = MergeRecipe(params, run, device="cpu", seed=0)
    recipe.setup()       # parents resolved once (LoRA merged in float32), compatibility, memory; the mergekit config
    recipe.merge()       # the SLERP sweep, one merge, or the mediphi recipe: whatever params.method says
    recipe.evaluate()    # sanity check + scores of both parents and every merge (probes, else held-out perplexity)
    recipe.select()      # the stated rule (selection.py), or the merge nearest to t when nothing can be scored
    recipe.save()        # selected/ + selection.json, the trade-off figure, metrics.json, timings.json
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mergekit.config import MergeConfiguration

from medslm.merge.compat import check_compatible
from medslm.merge.execute import run_stages
from medslm.merge.memory import check_memory, estimate_merge_memory
from medslm.merge.parents import Parent, resolve_parents
from medslm.merge.selection import (
    Selection,
    SelectionRule,
    chord_gaps,
    save_selection,
    select_merge,
    select_nearest,
)
from medslm.merge.sweep import (
    Evaluator,
    PlannedMerge,
    SweepPoint,
    evaluate_point,
    no_scores,
    perplexity_evaluator,
    plan_merges,
    probe_evaluator,
)
from medslm.models import resolve_device
from medslm.params import MergeParams
from medslm.rundir import RunDir, read_jsonl, write_json

# Held-out texts 03_cpt writes for runs without probes (records with a "text" field).
HELDOUT_FILES = {"medical": "heldout_medical.jsonl", "general": "heldout_general.jsonl"}
MEMORY_KEYS = ("model_bytes", "overhead_bytes", "inputs_bytes", "output_bytes", "working_bytes", "needed_bytes")


class MergeRecipe:
    """The merge step of a run: ``params`` (:class:`MergeParams`), the run folder, device and seed."""

    def __init__(self, params: MergeParams, run: RunDir | str | Path, *, device: str = "auto", seed: int = 0,
                 progress: bool = True):
        self.params = params
        self.run = run if isinstance(run, RunDir) else RunDir(run)
        self.out = self.run.merge
        self.device = resolve_device(device)
        self.seed = seed
        self.progress = progress
        self.parents: list[Parent] = []
        self.plan: list[PlannedMerge] = []
        self.points: list[SweepPoint] = []
        self.selection: Selection | None = None
        self.compatibility: dict[str, Any] = {}
        self.memory: dict[str, Any] = {}
        self.scored_by = "none"
        self.evaluation: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.figure: Any = None

    # ---- setup ----------------------------------------------------------------------------------------------
    def setup(self) -> MergeConfiguration:
        """Resolve the parents once, check that they can be merged and that the merge fits in memory; returns the
        mergekit configuration of the middle merge (the one to show)."""
        self.out.figures.mkdir(parents=True, exist_ok=True)
        self.parents = resolve_parents(self.params, self.run, self.out.path / "parents")
        paths = [parent.path for parent in self.parents]
        self.compatibility = check_compatible(paths, tokenizer_source=self.params.tokenizer_source)
        self.plan = plan_merges(self.params, paths[0], paths[1:], self.out.path)
        method = "breadcrumbs" if self.params.method == "mediphi" else self.params.method
        self.memory = estimate_merge_memory(paths, dtype=self.params.dtype, method=method,
                                            out_shard_size=self.params.out_shard_size, device=self.device)
        check_memory(self.memory)  # raises MergeMemoryError with what to try when it does not fit
        return self.config

    @property
    def config(self) -> MergeConfiguration:
        """mergekit's ``MergeConfiguration`` of the middle planned merge (the final stage of a recipe)."""
        return self.plan[len(self.plan) // 2].stages[-1].config

    @property
    def instruct(self) -> Parent:
        return self.parents[0]

    @property
    def cpt(self) -> Parent:
        return self.parents[1]

    # ---- merge ----------------------------------------------------------------------------------------------
    def merge(self) -> list[Path]:
        """Run every planned merge with mergekit (a finished merge of the same config is reused)."""
        from tqdm.auto import tqdm

        options = {"seed": self.seed, "device": self.device, "out_shard_size": self.params.out_shard_size,
                   "trust_remote_code": self.instruct.ref.trust_remote_code}
        self.timings["merge_s"] = {}
        for planned in tqdm(self.plan, desc=f"{self.params.method} merges", disable=not self.progress):
            start = time.perf_counter()
            run_stages(planned.stages, **options)
            self.timings["merge_s"][f"{planned.t:g}"] = round(time.perf_counter() - start, 3)
        return [planned.out for planned in self.plan]

    # ---- evaluate -------------------------------------------------------------------------------------------
    def evaluator(self) -> Evaluator:
        """Probes of 00_prepare when the run has them (toy world), else perplexity on 03_cpt's held-out medical and
        general texts, else none (merges are sanity-checked only). Sets ``scored_by``."""
        if self.run.prepare.probes.is_file():
            probes = read_jsonl(self.run.prepare.probes)
            heldout = read_jsonl(self.run.prepare.heldout) if self.run.prepare.heldout.is_file() else []
            self.scored_by, self.evaluation = "probes", {"probes": len(probes), "heldout": len(heldout)}
            return probe_evaluator(probes, heldout)
        files = {domain: self.run.cpt.path / name for domain, name in HELDOUT_FILES.items()}
        if all(f.is_file() for f in files.values()):
            texts = {d: [r["text"] for r in read_jsonl(f) if isinstance(r.get("text"), str)] for d, f in files.items()}
            self.scored_by = "perplexity"
            self.evaluation = {f"{d}_texts": min(len(v), self.params.eval_max_texts) for d, v in texts.items()}
            return perplexity_evaluator(texts, max_texts=self.params.eval_max_texts)
        self.scored_by, self.evaluation = "none", {}
        return no_scores

    def evaluate(self) -> list[SweepPoint]:
        """Sanity-check and score the instruct parent (t=0), the CPT parent (t=1), then every merge, which must
        also stay close to the parents' greedy answers; the points are kept in t order."""
        from tqdm.auto import tqdm

        evaluate_fn = self.evaluator()
        todo = [(0.0, "instruct", False, self.instruct.path), (1.0, "cpt", False, self.cpt.path),
                *((m.t, "merge", True, m.out) for m in self.plan)]
        points: list[SweepPoint] = []
        for t, label, merged, model_dir in tqdm(todo, desc=f"evaluate ({self.scored_by})", disable=not self.progress):
            parents = [(p.sanity.get("text", ""), p.sanity.get("answer_nll")) for p in points if not p.merged] \
                if merged else []
            points.append(evaluate_point(
                model_dir, evaluate_fn, t=t, label=label, merged=merged, device=self.device,
                sanity_prompt=self.params.sanity_prompt, trust_remote_code=self.instruct.ref.trust_remote_code,
                merge_seconds=self.timings.get("merge_s", {}).get(f"{t:g}", 0.0) if merged else 0.0,
                parent_answers=[(text, own) for text, own in parents if text.strip()]))
            self.points = [points[0], *points[2:], points[1]] if len(points) > 1 else list(points)
            write_json(self.out.path / "points.json", [p.as_dict() for p in self.points])
        return self.points

    # ---- select and save ------------------------------------------------------------------------------------
    def select(self) -> Selection:
        """Apply the selection rule of ``params`` to the measured points."""
        if self.scored_by == "none":
            self.selection = select_nearest(self.points, self.params.t, "no probes and no held-out texts to score by")
        else:
            self.selection = select_merge(self.points, SelectionRule.from_params(self.params, self.scored_by))
        return self.selection

    def plot(self) -> Any:
        """The trade-off figure (target against each constraint metric), saved as figures/tradeoff.png; None when
        nothing was scored."""
        import matplotlib.pyplot as plt

        from medslm import plots

        if self.selection is None or not self.selection.constraints:
            return None
        selection, points = self.selection.as_dict(), [p.as_dict() for p in self.points]
        target = "ppl_medical" if self.scored_by == "perplexity" else self.params.select_metric
        axes_for = list(self.selection.constraints)
        fig, axes = plt.subplots(1, len(axes_for), figsize=(6 * len(axes_for), 4.5), squeeze=False)
        for ax, x in zip(axes[0], axes_for, strict=True):
            plots.plot_merge_tradeoff(points, x=x, y=target, selection=selection, ax=ax,
                                      title=f"{self.params.method}: {target} vs {x}")
        fig.tight_layout()
        plots.save_figure(fig, self.out.figure("tradeoff"))
        self.figure = fig
        return fig

    def metrics(self) -> dict[str, Any]:
        """metrics.json of the step (no timings or machine-dependent figures: those go to timings.json)."""
        assert self.selection is not None, "call select() first"
        return {
            "step": "merge", "params": self.params.model_dump(mode="json"), "method": self.params.method,
            "instruct": str(self.instruct.path), "cpt_model": str(self.cpt.path),
            "experts": [str(p.path) for p in self.parents[2:]], "models": [p.as_dict() for p in self.parents],
            "compatibility": self.compatibility, "memory": {k: self.memory[k] for k in MEMORY_KEYS},
            "evaluation": {"scored_by": self.scored_by, **self.evaluation},
            "parents": {p.label: dict(p.scores) for p in self.points if not p.merged},
            "sweep": [p.row() for p in self.points],
            "selection": self.selection.as_dict(), "selected_dir": str(self.out.selected),
            "chord": {x: chord_gaps(self.points, x, self.params.select_metric) for x in ("general", "chat")},
        }

    def save(self) -> dict[str, Any]:
        """Copy the selected model to ``04_merge/selected`` (with selection.json), save the figure and write
        metrics.json and timings.json; returns the metrics."""
        assert self.selection is not None, "call select() first"
        save_selection(self.selection, self.out.selected)
        if self.figure is None:
            self.plot()
        metrics = self.metrics()
        write_json(self.out.metrics, metrics)
        points = {f"{p.label}@{p.t:g}": p.seconds for p in self.points}
        write_json(self.out.path / "timings.json", {**self.timings, "points": points,
                                                    "memory_available_bytes": self.memory.get("available_bytes")})
        return metrics

    def run_all(self) -> dict[str, Any]:
        """setup → merge → evaluate → select → save (the script's path; the notebook calls them one by one)."""
        self.setup()
        self.merge()
        self.evaluate()
        self.select()
        return self.save()
