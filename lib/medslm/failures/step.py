"""08_failure_analysis as one recipe: read 07's per-item answers, run every detector, tell the seeds' story.

Everything is computed from 07_evaluate's files; no model is loaded. The files must be 07's of *this* run: when the
run has a manifest, their sha256 must be the ones recorded when 07 finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medslm.failures.forgetting import forgetting_table, restored_share
from medslm.failures.report import MODES, FailureItem, FailureReport, analyse_failures
from medslm.params import FailureAnalysisParams, RunParams
from medslm.rundir import RunDir, iter_jsonl_numbered, read_json, sha256_file


class UpstreamError(RuntimeError):
    """07_evaluate's files are missing or are not the ones this run's 07 wrote."""


def generation_files(run: RunDir) -> list[Path]:
    """07's per-variant answers, checked against the run's manifest."""
    metrics = run.evaluate.metrics
    files = sorted(run.evaluate.items.glob("*.generations.jsonl"))
    if not metrics.is_file() or not files:
        raise UpstreamError(f"08_failure_analysis reads 07_evaluate's answers, but {run.evaluate.items} has none; "
                            "run 07_evaluate first (medslm run PROFILE --steps evaluate)")
    manifest = run.read_manifest().get("steps", {}).get("evaluate")
    if manifest:
        recorded = {a["path"]: a["sha256"] for a in manifest.get("artifacts", [])}
        for path in files:
            key = str(path.relative_to(run.path))
            if key in recorded and recorded[key] != sha256_file(path):
                raise UpstreamError(f"{path} changed after 07_evaluate wrote it (sha256 differs from the manifest); "
                                    "rerun 07_evaluate")
            if key not in recorded:
                raise UpstreamError(f"{path} is not among the files 07_evaluate of this run recorded; rerun 07_evaluate")
    return files


def failure_items(path: Path) -> list[FailureItem]:
    """07's generation records as detector input. The language an answer must be in is the record's
    ``answer_language`` (a translation answers in the other language than its prompt)."""
    items = []
    for line, rec in iter_jsonl_numbered(path):
        rec = {**rec, "prompt_language": rec.get("answer_language") or rec.get("prompt_language")}
        items.append(FailureItem.from_record(rec, f"{path}:{line}"))
    return items


class FailureRecipe:
    """Language mixing, verbosity, degeneration, format failures and forgetting per variant."""

    def __init__(self, params: FailureAnalysisParams, run_dir: str | Path, settings: RunParams | None = None):
        self.params = params
        self.run_dir = RunDir(run_dir)
        self.out = self.run_dir.step("failure_analysis")
        self.settings = settings or RunParams()
        self.report: FailureReport | None = None

    @classmethod
    def from_context(cls, ctx: Any) -> FailureRecipe:
        return cls(ctx.params, ctx.rundir.path, ctx.run)

    def load(self) -> list[FailureItem]:
        return [item for path in generation_files(self.run_dir) for item in failure_items(path)]

    def analyse(self) -> FailureReport:
        self.report = analyse_failures(self.load(), self.params)
        return self.report

    def scores(self) -> dict[str, dict[str, float]]:
        """Each variant's general/chat/medical scores from 07's table (toy probes or benchmarks)."""
        table = read_json(self.run_dir.evaluate.table)
        keep = lambda k: k.startswith("toy_probes_") or k in ("task_score",)  # noqa: E731
        return {row["variant"]: {k.removeprefix("toy_probes_"): v for k, v in row.items() if keep(k) and v is not None}
                for row in table if row.get("status") == "ok"}

    def forgetting(self) -> list[dict[str, Any]]:
        scores = {v: {k: s for k, s in values.items() if k in ("general", "chat")} for v, values in self.scores().items()}
        if not any(scores.values()):
            return []
        return [row.__dict__ for row in forgetting_table(scores, self.params.forgetting_reference,
                                                        tolerance=self.params.forgetting_tolerance)]

    def story(self) -> dict[str, Any]:
        """The seeds' story in numbers: CPT forgets, merging restores part of it, DPO cuts language mixing and
        verbosity compared with SFT. Each link says whether it holds here."""
        scores, rates = self.scores(), self._rates()
        out: dict[str, Any] = {}
        for group in ("general", "chat"):
            ref, cpt, merge = (scores.get(v, {}).get(group) for v in ("instruct", "cpt", "merge"))
            if None not in (ref, cpt, merge):
                out[f"cpt_forgets_{group}"] = {"instruct": ref, "cpt": cpt, "holds": cpt < ref}
                out[f"merge_restores_{group}"] = {"merge": merge, "restored_share": restored_share(ref, cpt, merge),
                                                  "holds": merge > cpt}
        for mode in ("language_mixed", "verbose"):
            sft, dpo = rates.get("sft", {}).get(mode), rates.get("dpo", {}).get(mode)
            if sft is not None and dpo is not None:
                out[f"dpo_cuts_{mode}"] = {"sft": sft, "dpo": dpo, "holds": dpo < sft}
        return out

    def _rates(self) -> dict[str, dict[str, float]]:
        table = self.report.table() if self.report else None
        if table is None or table.empty:
            return {}
        return {variant: {k: float(v) for k, v in row.items() if v == v} for variant, row in table.iterrows()}

    def worst(self) -> dict[str, list[dict[str, Any]]]:
        return {mode: [ex.__dict__ for ex in self.report.worst(mode)] for mode in MODES} if self.report else {}

    def finish(self) -> dict[str, Any]:
        from medslm.notebook import write_step_metrics

        metrics = {"rates": self._rates(), "forgetting": self.forgetting(), "story": self.story(),
                   "worst": self.worst(), "items": len(self.report.results) if self.report else 0}
        write_step_metrics(self.out, "failure_analysis", self.params, metrics)
        return metrics

    def run(self) -> dict[str, Any]:
        self.analyse()
        return self.finish()
