"""06_align as one recipe: ``setup → sft_trainer → train → save("sft") → dpo_trainer → train → save("dpo")``.

The notebook calls the stages cell by cell and sees trl's objects (``SFTConfig``/``SFTTrainer``,
``DPOConfig``/``DPOTrainer``); :meth:`AlignRecipe.run` calls the same methods in the same order. Each stage is saved
as a full model folder (adapters merged into a full-precision reload of its base, never into 4-bit weights) plus
the adapter, with a model card; checkpoints are keyed by a fingerprint so a killed stage resumes only with the same
parameters and data.
"""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any

from medslm import cards
from medslm.align.checks import answer, probe_scores, sample_rows, summarize
from medslm.align.data import (
    as_dataset,
    by_rejection,
    check_chat_template,
    length_report,
    read_dpo_rows,
    read_sft_rows,
    training_lengths,
)
from medslm.align.trainers import (
    dpo_config,
    dpo_trainer,
    load_policy,
    load_reference,
    peft_config,
    sft_config,
    sft_trainer,
)
from medslm.models import (
    ModelRef,
    cast_saved_model,
    load_tokenizer,
    merge_lora_adapter,
    resolve_device,
    save_model,
    source_dtype,
)
from medslm.params import AlignParams, RunParams
from medslm.projection import project_training, report_projection
from medslm.rundir import RunDir, read_json, read_jsonl, sha256_file, write_json
from medslm.training import checkpoint_step, last_checkpoint, loss_curve, run_fingerprint, train_or_restore

STAGES = {"sft_dpo": ("sft", "dpo"), "sft_only": ("sft",), "dpo_only": ("dpo",)}
# Knobs that do not change what is trained (a run differing only in these may resume the other's checkpoints).
NOT_FINGERPRINTED = {"resume", "save_steps", "logging_steps", "check_examples", "max_new_tokens", "stages",
                     "projection_batches", "warn_projected_minutes"}
DPO_FIELDS = ("prompt", "chosen", "rejected")
HELDOUT_FIGURES = {"preference_accuracy": "rewards/accuracies", "reward_margin": "rewards/margins", "loss": "loss"}
SFT_CAPS = "sft_max_examples or sft_epochs (fewer steps), or max_length / sft_batch_size (fewer tokens per step)"


def synthesize_files(run: RunDir) -> dict[str, Path]:
    """05_synthesize's files that 06_align reads (SFT messages and DPO pairs, train and held-out test)."""
    folders = {"sft": run.synthesize.sft, "dpo": run.synthesize.dpo}
    return {f"{kind}_{split}": folders[kind] / f"{split}.jsonl" for kind in folders for split in ("train", "test")}


def warn_if_cut(path: Path, report: dict[str, Any]) -> str | None:
    """Warn (and tell ``medslm run``) when trl will cut examples at ``max_length``: a cut answer never ends."""
    from medslm.progress import warn

    if not report["over_max_length"]:
        return None
    message = (f"{path}: {report['over_max_length']} of {report['examples']} examples are longer than "
               f"align.max_length = {report['max_length']} tokens (longest {report['longest']}); trl cuts them, so "
               "their answers lose their end: raise max_length or shorten those examples")
    return warn(message, stacklevel=2)


def pair_weighted(by_kind: dict[str, dict[str, float]]) -> dict[str, float]:
    """The held-out figures over all pairs: each kind's figure weighted by its number of pairs (exact for reward
    accuracy and margin, which are means over pairs; close for a loss with trl's ``sft`` term, a mean over tokens)."""
    pairs = sum(figures["pairs"] for figures in by_kind.values())
    return {name: sum(figures[name] * figures["pairs"] for figures in by_kind.values()) / pairs
            for name in HELDOUT_FIGURES}


class AlignRecipe:
    """SFT then DPO (trl) of the start model — by default 04_merge's selected merge."""

    def __init__(self, params: AlignParams, run_dir: str | Path, settings: RunParams | None = None):
        self.params = params
        self.run_dir = RunDir(run_dir)
        self.out = self.run_dir.align
        self.settings = settings or RunParams()
        self.device = resolve_device(self.settings.device)
        self.start = self._start_model()
        self.stages = STAGES[params.stages]
        self.tokenizer: Any = None
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, list[str]] = {}
        self.timings: dict[str, Any] = {}
        self.lengths: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_context(cls, ctx: Any) -> AlignRecipe:
        return cls(ctx.params, ctx.rundir.path, ctx.run)

    def _start_model(self) -> ModelRef:
        if self.params.start_model:
            return ModelRef(self.params.start_model, self.params.revision, self.params.trust_remote_code)
        selected = self.run_dir.merge.selected
        if not (selected / "config.json").is_file():
            raise FileNotFoundError(f"no start model: {selected} has no model; run 04_merge or set align.start_model")
        return ModelRef(str(selected))

    # ---------------------------------------------------------------------------------------------------- data

    def setup(self) -> dict[str, int]:
        """Read and check 05_synthesize's files and the tokenizer's chat template; returns the row counts."""
        files = synthesize_files(self.run_dir)
        missing = [str(path) for key, path in files.items() if key.split("_")[0] in self.stages and not path.is_file()]
        if missing:
            raise FileNotFoundError(f"06_align needs 05_synthesize's files; missing: {missing}. Run 05_synthesize.")
        for key, path in files.items():
            if key.split("_")[0] in self.stages or key == "sft_test":
                self.rows[key] = (read_sft_rows if key.startswith("sft") else read_dpo_rows)(path)
        self.data_sha256 = {key: sha256_file(files[key]) for key in self.rows}
        self.tokenizer = load_tokenizer(self.start.ref, **self.start.hub_kwargs())
        check_chat_template(self.tokenizer, self.params.assistant_only_loss and "sft" in self.stages)
        self.lengths = {key: length_report(training_lengths(self.tokenizer, self.rows[key]), self.params.max_length)
                        for key in ("sft_train", "dpo_train") if key in self.rows}
        for key, report in self.lengths.items():
            warn_if_cut(files[key], report)
        return {key: len(rows) for key, rows in self.rows.items()}

    def dataset(self, key: str):
        """A ``datasets.Dataset`` of ``sft_train`` (messages) or ``dpo_train``/``dpo_test`` (prompt/chosen/rejected);
        training sets are capped at ``sft_max_examples``/``dpo_max_pairs`` (a seeded sample)."""
        fields = ("messages",) if key.startswith("sft") else DPO_FIELDS
        cap = {"sft_train": self.params.sft_max_examples, "dpo_train": self.params.dpo_max_pairs}.get(key, 0)
        return as_dataset(sample_rows(self.rows[key], cap, self.settings.seed, key) if cap else self.rows[key], fields)

    def dpo_eval_sets(self) -> dict[str, Any]:
        """The held-out pairs as one ``datasets.Dataset`` per rejection kind (trl evaluates each on its own, so the
        reward accuracy says which kinds of worse answer DPO learned to tell apart)."""
        return {kind: as_dataset(rows, DPO_FIELDS) for kind, rows in by_rejection(self.rows["dpo_test"]).items()}

    # ---------------------------------------------------------------------------------------------- training

    def stage_input(self, stage: str) -> ModelRef:
        """What a stage starts from: DPO after SFT starts from the SFT model."""
        if stage == "dpo" and "sft" in self.stages:
            return ModelRef(str(self.out.model("sft")))
        return self.start

    def checkpoint_dir(self, stage: str) -> Path:
        fp = run_fingerprint(self.params, NOT_FINGERPRINTED, stage=stage, data=self.data_sha256,
                             start=self.stage_input(stage).as_dict())
        return self.out.checkpoints(stage) / f"run-{fp}"

    def resume_point(self, stage: str) -> str | None:
        """The newest checkpoint of this very run (same parameters and data) when ``resume``, else None."""
        folder = self.checkpoint_dir(stage)
        if not self.params.resume:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return last_checkpoint(folder)

    def sft_config(self):
        """trl's ``SFTConfig`` of this run."""
        return sft_config(self.params, self.checkpoint_dir("sft"), self.device, self.settings.seed)

    def dpo_config(self):
        """trl's ``DPOConfig`` of this run."""
        return dpo_config(self.params, self.checkpoint_dir("dpo"), self.device, self.settings.seed)

    def sft_trainer(self):
        """``trl.SFTTrainer`` on the start model (LoRA/QLoRA through ``peft_config``)."""
        from medslm.notebook import seed_everything

        seed_everything(self.settings.seed)
        model = load_policy(self.params, self.start, self.device)
        return sft_trainer(model, self.tokenizer, self.dataset("sft_train"), self.sft_config(),
                           peft_config(self.params))

    def dpo_trainer(self):
        """``trl.DPOTrainer`` from the SFT model (or the start model for dpo_only), with its reference done right."""
        from medslm.notebook import seed_everything

        seed_everything(self.settings.seed)
        source = self.stage_input("dpo")
        model = load_policy(self.params, source, self.device)
        reference = load_reference(self.params, source, self.device)
        return dpo_trainer(model, reference, self.tokenizer, self.dataset("dpo_train"), self.dpo_eval_sets(),
                           self.dpo_config(), peft_config(self.params))

    def train(self, stage: str, trainer: Any) -> dict[str, Any]:
        """``trainer.train()`` (resuming when it can), then the stage's summary; DPO adds held-out reward figures."""
        start = time.perf_counter()
        resumed = self.resume_point(stage)
        if stage == "sft":  # DPO's step (policy and reference, pairs) is not a plain forward: not projected
            projection = project_training(trainer, self.params.projection_batches, checkpoint_step(resumed))
            report_projection(projection, self.params.warn_projected_minutes, SFT_CAPS)
            self.timings["sft_projection"] = projection.as_dict() if projection else None  # measured: timings
        train_or_restore(trainer, resumed)
        summary = {"global_step": trainer.state.global_step, "resumed_from": resumed,
                   "loss_curve": loss_curve(trainer.state.log_history)}
        if stage == "dpo":
            history = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
            summary["reward_curve"] = [(int(h["step"]), h["rewards/accuracies"], h["rewards/margins"]) for h in history]
            summary["heldout_by_rejection"] = self.heldout_by_rejection(trainer)
            summary["heldout"] = pair_weighted(summary["heldout_by_rejection"])
        self.timings[f"{stage}_train_s"] = round(time.perf_counter() - start, 2)
        self.results[stage] = summary
        return summary

    def heldout_by_rejection(self, trainer: Any) -> dict[str, dict[str, float]]:
        """trl's held-out figures per rejection kind (``evaluate`` on each of :meth:`dpo_eval_sets`, as trl
        prepared them), with the kind's number of pairs."""
        out = {}
        for kind, rows in by_rejection(self.rows["dpo_test"]).items():
            metrics = trainer.evaluate(eval_dataset=kind)  # trl logs its reward figures as eval_rewards/...
            out[kind] = {"pairs": len(rows), **{name: metrics[f"eval_{key}"] for name, key in HELDOUT_FIGURES.items()}}
        return out

    def save(self, stage: str, trainer: Any) -> Path:
        """The stage's full model folder (+ adapter for lora/qlora) with a model card; frees the trainer's model."""
        model_dir, adapter_dir = self.out.model(stage), self.out.adapter(stage)
        for folder in (model_dir, adapter_dir):
            shutil.rmtree(folder, ignore_errors=True)
        if self.params.mode == "full":
            trainer.model.config.use_cache = True
            save_model(trainer.model, self.tokenizer, model_dir)
        else:
            trainer.model.save_pretrained(adapter_dir)
            self.tokenizer.save_pretrained(adapter_dir)
            base = self.stage_input(stage)
            merge_lora_adapter(base.ref, adapter_dir, model_dir, tokenizer=self.tokenizer, device=self.device,
                               **base.hub_kwargs())
        trainer.model = trainer.model_wrapped = None
        gc.collect()
        cast_saved_model(model_dir, source_dtype(self.stage_input(stage)))  # the dtype the stage started from
        (model_dir / "README.md").write_text(self._card(stage), encoding="utf-8")
        return model_dir

    def _card(self, stage: str) -> str:
        names = {"sft": "supervised fine-tuning (trl SFTTrainer)", "dpo": "direct preference optimisation (trl DPOTrainer)"}
        data = {key: f"{len(self.rows[key])} rows, sha256 {self.data_sha256[key][:16]}…"
                for key in self.rows if key.startswith(stage)}
        return cards.model_card(f"medslm 06_align: {stage.upper()}", f"The start model after {names[stage]}.",
                                self.stage_input(stage), self.params, [stage, self.params.mode],
                                {"mode": self.params.mode, **data}, results=self.results.get(stage))

    # ---------------------------------------------------------------------------------------------- checks

    def check_rows(self) -> list[dict[str, Any]]:
        """The held-out rows every model answers in the quick checks (a seeded sample of 05's SFT test split)."""
        return sample_rows(self.rows["sft_test"], self.params.check_examples, self.settings.seed)

    def check(self, label: str, model_dir: str | Path | None = None) -> dict[str, Any]:
        """Quick checks of one model (``start``, ``sft``, ``dpo``): held-out task scores, JSON validity, answer
        language and length, and the toy world's probes (the alignment tax on knowledge)."""
        start = time.perf_counter()
        model_dir = model_dir or (self.start.ref if label == "start" else self.out.model(label))
        rows = self.check_rows()
        schemas = read_json(self.run_dir.synthesize.schemas) if self.run_dir.synthesize.schemas.is_file() else {}
        self.answers[label] = answer(model_dir, rows, self.device, self.params.max_new_tokens)
        summary = summarize(rows, self.answers[label], schemas, [self.settings.language])
        if self.run_dir.prepare.probes.is_file():
            summary["probes"] = probe_scores(model_dir, read_jsonl(self.run_dir.prepare.probes), self.device)
        self.checks[label] = summary
        self.timings[f"check_{label}_s"] = round(time.perf_counter() - start, 2)
        return summary

    def side_by_side(self, per_language: int = 2, max_chars: int = 160) -> list[dict[str, str]]:
        """A few held-out prompts (German and English) with the reference and each checked model's answer."""
        rows, out = self.check_rows(), []
        for lang in ("de", "en"):
            picked = [i for i, row in enumerate(rows) if row.get("language") == lang][:per_language]
            for i in picked:
                out.append({"task": f"{rows[i]['task']} ({lang}, {rows[i].get('format')})",
                            "reference": rows[i]["messages"][-1]["content"][:max_chars],
                            **{label: answers[i][:max_chars] for label, answers in self.answers.items()}})
        return out

    # --------------------------------------------------------------------------------------------- whole run

    def run(self) -> dict[str, Any]:
        """Every stage, as the notebook runs them."""
        self.setup()
        self.check("start")
        if "sft" in self.stages:
            trainer = self.sft_trainer()
            self.train("sft", trainer)
            self.save("sft", trainer)
            self.check("sft")
        if "dpo" in self.stages:
            trainer = self.dpo_trainer()
            self.train("dpo", trainer)
            self.save("dpo", trainer)
            self.check("dpo")
        return self.finish()["results"]

    def finish(self) -> dict[str, Any]:
        """Write metrics.json (reproducible figures) and timings.json; returns the metrics."""
        from medslm.notebook import write_step_metrics

        metrics = {"start_model": self.start.as_dict(), "stages": list(self.stages), "mode": self.params.mode,
                   "data": {key: len(rows) for key, rows in self.rows.items()}, "lengths": self.lengths,
                   "results": self.results,
                   "checks": self.checks,
                   "models": {stage: str(self.out.model(stage)) for stage in self.results}}
        write_step_metrics(self.out, "align", self.params, metrics)
        write_json(self.out.path / "timings.json", self.timings)
        return metrics
