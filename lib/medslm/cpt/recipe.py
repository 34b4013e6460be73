"""03_cpt as one recipe: ``setup_data → setup_model → train → save → evaluate → finish``.

The notebook calls these stages cell by cell; ``python -m medslm.cpt.launch PROFILE`` calls :meth:`CptRecipe.run`
(one process, or every process under ``accelerate launch``). With ``num_processes > 1`` a notebook's
:meth:`CptRecipe.train` hands set-up, training and saving to ``accelerate launch`` (:meth:`run_training` in each
process) and reads back what they report, so both ways produce the same files and the same metrics keys.
"""

from __future__ import annotations

import gc
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from medslm.cpt.data import CptData, packing_stats, prepare_data, texts
from medslm.cpt.launch import format_command, is_main_process, launch_command, python_accelerate, world_size
from medslm.cpt.measure import compare, evaluate_model
from medslm.cpt.modes import check_trainable, setup_model
from medslm.cpt.save import finalize
from medslm.cpt.trainer import checkpoint_dir, cpt_training_arguments, train
from medslm.models import load_model, lora_config, model_stats, resolve_device, resolve_model
from medslm.params import CptParams, RunParams
from medslm.rundir import RunDir, read_json, read_jsonl, write_json, write_jsonl

# kept in timings.json (the projection too: it is measured), so metrics.json is reproducible
MACHINE_DEPENDENT = ("seconds", "tokens_per_second", "projection")


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class CptRecipe:
    """Continual pre-training of the run's base model on 02_classify's filtered corpus (full, LoRA or QLoRA)."""

    def __init__(self, params: CptParams, run_dir: str | Path, settings: RunParams | None = None,
                 profile: str | Path | None = None):
        self.params = params
        self.run_dir = RunDir(run_dir)
        self.out = self.run_dir.cpt
        self.settings = settings or RunParams()
        self.device = resolve_device(self.settings.device)
        self.profile = Path(profile) if profile else None
        self.base = resolve_model(params.base, self.run_dir.path, params.revision, params.trust_remote_code)
        self.timings: dict[str, Any] = {}
        self.data: CptData | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.trainable: dict[str, Any] | None = None
        self.packing: dict[str, Any] | None = None
        self.training: dict[str, Any] | None = None
        self.model_dir: Path | None = None
        self.comparison: dict[str, Any] = {}
        self.model_stats: dict[str, Any] | None = None
        self.examples: list[dict[str, str]] = []

    @classmethod
    def from_context(cls, ctx: Any) -> CptRecipe:
        """The recipe of a notebook's :class:`~medslm.notebook.StepContext`."""
        return cls(ctx.params, ctx.rundir.path, ctx.run, profile=ctx.profile)

    @property
    def hands_off_training(self) -> bool:
        """Whether this (single) process hands training to ``accelerate launch`` (``num_processes > 1``)."""
        return self.params.num_processes > 1 and world_size() == 1

    def _timed(self, name: str, start: float) -> None:
        self.timings[f"{name}_s"] = round(time.perf_counter() - start, 3)

    # ---------------------------------------------------------------------------------------------------- stages

    def setup_data(self) -> CptData:
        """Filtered corpus → train / held-out documents, replayed general documents, QA texts (pre-instruction
        tuning). The held-out texts are written for 04_merge, which measures its merges on the same text."""
        start = time.perf_counter()
        self.data = prepare_data(self.params, self.run_dir, self.settings.seed)
        if is_main_process():
            cap = self.params.eval_max_texts
            write_jsonl(self.out.heldout_medical, ({"text": t} for t in texts(self.data.heldout_docs)[:cap]))
            write_jsonl(self.out.heldout_general, ({"text": t} for t in texts(self.data.heldout_general)[:cap]))
        self._timed("data", start)
        return self.data

    def lora_config(self):
        """The ``peft.LoraConfig`` that modes lora/qlora attach to ``target_modules`` of every layer."""
        params = self.params
        return lora_config(list(params.target_modules), r=params.lora_r, alpha=params.lora_alpha,
                           dropout=params.lora_dropout)

    def training_arguments(self):
        """The ``transformers.TrainingArguments`` of this run (checkpoints in ``03_cpt/checkpoints/run-<fp>``)."""
        return cpt_training_arguments(self.params, self._checkpoint_dir(), self.device, self.settings.seed,
                                      sequential=self.params.pre_instruction_tuning)

    def setup_model(self) -> dict[str, Any] | None:
        """Load the base and make it trainable for the mode; returns the trainable-parameter report (raises when
        the intended weights are frozen). When training is handed to ``accelerate launch`` only the tokenizer is
        loaded here (the report then comes back from the launched processes)."""
        from medslm.models import load_tokenizer
        from medslm.notebook import seed_everything

        start = time.perf_counter()
        seed_everything(self.settings.seed)  # LoRA adapters are initialised here: same seed, same adapters
        if self.hands_off_training:
            self.tokenizer = load_tokenizer(self.base.ref, **self.base.hub_kwargs())
        else:
            self.model, self.tokenizer = setup_model(self.params, self.base, self.device)
            self.trainable = {k: v for k, v in check_trainable(self.model, self.params).items() if k != "names"}
        self.packing = packing_stats(self.tokenizer, self._data().texts, self.params.block_size)
        self._timed("setup", start)
        return self.trainable

    def train(self) -> dict[str, Any]:
        """Train (resuming from the last checkpoint of the same run when ``resume``); returns the training summary
        (steps, loss curve, resume point, throughput). With ``num_processes > 1``: ``accelerate launch``."""
        if self.hands_off_training:
            return self._launch_training()
        outcome = train(self.model, self.tokenizer, self._data().texts, self.params, self._checkpoint_dir(),
                        self.device, self.settings.seed, qa=self._data().qa)
        self.model, self._trainer, self._global_step = outcome.model, outcome.trainer, outcome.global_step
        self.training = outcome.as_dict()
        return self.training

    def save(self) -> Path:
        """Write the adapter (lora/qlora) and the full model with its model card; returns the model folder."""
        start = time.perf_counter()
        if self.model_dir is None:  # (a launched run has saved already)
            self.model_dir = finalize(self.model, self.tokenizer, self.params, self.run_dir, self.base,
                                      self._data().corpus, self._global_step, trainer=self._trainer,
                                      device=self.device)
        self.model = self._trainer = None  # free the training copy
        _free_memory()
        self._timed("finalize", start)
        return self.model_dir

    def evaluate(self) -> dict[str, Any]:
        """Probes (toy world) and perplexity on held-out medical and general text, before (base) and after (CPT);
        ``forgetting`` = the drop of general/chat probes and the rise of general perplexity."""
        start = time.perf_counter()
        run, data = self.run_dir, self._data()
        probes = read_jsonl(run.prepare.probes) if run.prepare.probes.is_file() else None
        heldout = read_jsonl(run.prepare.heldout) if run.prepare.heldout.is_file() else None
        results = {}
        for label, ref, hub in (("before", self.base.ref, self.base.hub_kwargs()), ("after", self.model_dir, {})):
            model = load_model(ref, device=self.device, **hub)
            results[label] = evaluate_model(model, self.tokenizer, probes, heldout, texts(data.heldout_docs),
                                            texts(data.heldout_general), max_texts=self.params.eval_max_texts)
            self.examples += self._greedy_examples(label, model, probes)
            if label == "after":
                self.model_stats = model_stats(model).as_dict()
            model = None
            _free_memory()
        self.comparison = compare(results["before"], results["after"])
        self._timed("evaluate", start)
        return self.comparison

    def metrics(self) -> dict[str, Any]:
        """metrics.json's content (machine-dependent figures go to :attr:`timings`)."""
        data = self._data()
        training = dict(self.training or {})
        self.timings["train"] = {k: training.pop(k) for k in MACHINE_DEPENDENT if k in training}
        return {
            "mode": self.params.mode, "base": self.base.as_dict(), "corpus": data.corpus, "replay": data.replay_info,
            "packing": self.packing, "trainable": self.trainable, "training": training,
            "pre_instruction_tuning": {"qa_texts": len(data.qa or [])}, "model_dir": str(self.model_dir),
            "processes": self.params.num_processes if self.hands_off_training else world_size(),
            "model_stats": self.model_stats, **self.comparison,
        }

    def finish(self) -> dict[str, Any]:
        """Write metrics.json and timings.json (main process); returns the metrics."""
        from medslm.notebook import write_step_metrics

        metrics = self.metrics()
        if is_main_process():
            write_step_metrics(self.out, "cpt", self.params, metrics)
            write_json(self.out.path / "timings.json", self.timings)
        return metrics

    # ---------------------------------------------------------------------------------------------- whole runs

    def run(self, evaluate: bool = True) -> dict[str, Any]:
        """The whole step, as ``python -m medslm.cpt.launch PROFILE`` runs it."""
        self.setup_data()
        self.setup_model()
        self.train()
        self.save()
        if evaluate and is_main_process():
            self.evaluate()
        return self.finish()

    def run_training(self) -> dict[str, Any]:
        """Set-up, training and saving in one of several processes; the main process reports to training.json."""
        self.setup_data()
        self.setup_model()
        self.train()
        self.save()
        report = {"training": self.training, "trainable": self.trainable, "packing": self.packing,
                  "model_dir": str(self.model_dir), "processes": world_size()}
        if is_main_process():
            write_json(self.out.training, report)
        return report

    def summary(self) -> dict[str, Any]:
        """One line for a terminal: model folder, steps, processes, forgetting."""
        return {"model_dir": str(self.model_dir), "global_step": (self.training or {}).get("global_step"),
                "processes": world_size() if not self.hands_off_training else self.params.num_processes,
                "forgetting": self.comparison.get("forgetting")}

    def launch_command_line(self, num_processes: int | None = None, config: str | None = None) -> str:
        """The ``accelerate launch`` line that runs this step on several GPUs (FSDP config by name or path)."""
        if self.profile is None:
            raise ValueError("launching needs the profile file: pass profile= (a notebook passes its `profile`)")
        return format_command(launch_command(self.profile, config or self.params.accelerate_config,
                                             num_processes or self.params.num_processes, run_dir=self.run_dir.path))

    # ---------------------------------------------------------------------------------------------- internals

    _trainer: Any = None
    _global_step: int | None = None

    def _data(self) -> CptData:
        if self.data is None:
            raise RuntimeError("call setup_data() first")
        return self.data

    def _checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.run_dir, self.params, self._data().fingerprint_sha256, self.base)

    def _launch_training(self) -> dict[str, Any]:
        if self.profile is None:
            raise ValueError("num_processes > 1 launches `accelerate launch` with the profile file: pass profile=")
        cmd = launch_command(self.profile, self.params.accelerate_config, self.params.num_processes,
                             run_dir=self.run_dir.path, accelerate=python_accelerate()) + ["--train-only"]
        print(format_command(cmd), flush=True)
        subprocess.run(cmd, check=True)
        report = read_json(self.out.training)
        self.training, self.trainable = report["training"], report["trainable"]
        self.model_dir = Path(report["model_dir"])
        return self.training

    def _greedy_examples(self, label: str, model: Any, probes: list[dict[str, Any]] | None) -> list[dict[str, str]]:
        """One held-out medical cloze completed greedily: what the numbers mean, in words."""
        probe = next((r for r in probes or [] if r["domain"] == "medical" and r["probe"] == "cloze"), None)
        if probe is None:
            return []
        enc = self.tokenizer(probe["context"], return_tensors="pt", return_token_type_ids=False).to(model.device)
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        answer = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [{"model": label, "context": probe["context"], "completion": answer,
                 "gold": probe["choices"][probe["gold"]]}]
