"""The run-directory contract: where each step's artifacts live and the manifest (file I/O: :mod:`medslm.fileio`;
file records: :mod:`medslm.filerecords`; the run lock: :mod:`medslm.runlock`; their names are importable from here).

Layout of a run directory::

    <run>/manifest.json            per step: status, start/end, params hash, artifacts (path, bytes, sha256)
    <run>/notebooks/NN_step.ipynb  executed copies of the notebooks
    <run>/00_prepare/...           one folder per step (see the ``*Dir`` classes below)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from medslm.fileio import (  # re-exported (see __all__): the run-directory contract reads and writes through these
    PACKAGES,
    JsonlError,
    atomic_path,
    iter_jsonl,
    iter_jsonl_numbered,
    now_iso,
    package_versions,
    read_json,
    read_jsonl,
    sha256_file,
    write_json,
    write_jsonl,
    write_text,
)
from medslm.filerecords import (  # re-exported (see __all__)
    FileChange,
    file_record,
    verify_files,
    visible_files,
)
from medslm.params import STEP_DIRS
from medslm.runlock import (  # re-exported
    LOCK_FILES,
    NotARunDir,
    RunDirBusy,
    RunDirError,
    describe_holder,
    hold_lock,
)

__all__ = [
    "AlignDir",
    "AnnotateDir",
    "ClassifyDir",
    "CptDir",
    "EvaluateDir",
    "FileChange",
    "JsonlError",
    "MergeDir",
    "NotARunDir",
    "PACKAGES",
    "PrepareDir",
    "RunDir",
    "RunDirBusy",
    "RunDirError",
    "StepDir",
    "SynthesizeDir",
    "atomic_path",
    "describe_holder",
    "file_record",
    "iter_jsonl",
    "iter_jsonl_numbered",
    "now_iso",
    "package_versions",
    "read_json",
    "read_jsonl",
    "sha256_file",
    "verify_files",
    "visible_files",
    "write_json",
    "write_jsonl",
    "write_text",
]


# --------------------------------------------------------------------------------------------------------------
# Step folders
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepDir:
    """A step's folder inside the run directory; subclasses name the step's artifacts."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"


@dataclass(frozen=True)
class PrepareDir(StepDir):
    @property
    def corpus(self) -> Path:
        """The web corpus: one document per line (id, text, lang, and in the toy world kind and gold label)."""
        return self.path / "corpus.jsonl"

    @property
    def probes(self) -> Path:
        """Knowledge and chat probes (4-option multiple choice)."""
        return self.path / "probes.jsonl"

    @property
    def chat(self) -> Path:
        """General chat examples the tiny model was trained on."""
        return self.path / "chat.jsonl"

    @property
    def lexicon(self) -> Path:
        """Toy world: the lexicon annotator derived from gold-labelled development documents (01's lexicon backend
        uses it instead of the packaged hand-written one)."""
        return self.path / "lexicon.yaml"

    @property
    def heldout(self) -> Path:
        """Held-out texts for perplexity: medical and general sentences in held-out templates."""
        return self.path / "heldout.jsonl"

    @property
    def model(self) -> Path:
        """The base (instruct) model as an HF folder, or a pointer file to a hub model (see base_model.json)."""
        return self.path / "model"

    @property
    def base_model(self) -> Path:
        """JSON: the reference of the base instruct model (hub id or local folder) used by later steps."""
        return self.path / "base_model.json"

    @property
    def world(self) -> Path:
        """JSON: the toy world's facts and which template of each fact is held out."""
        return self.path / "world.json"


@dataclass(frozen=True)
class AnnotateDir(StepDir):
    @property
    def labels(self) -> Path:
        """JSONL: one LLM label per sampled document (id, label, quality, justification, prompt version, raw reply)."""
        return self.path / "labels.jsonl"

    @property
    def cache(self) -> Path:
        """Folder of cached LLM replies, so a killed run resumes without repeating calls."""
        return self.path / "cache"


@dataclass(frozen=True)
class ClassifyDir(StepDir):
    @property
    def classifier(self) -> Path:
        """The trained classifier (a scikit-learn pipeline file or an HF model folder)."""
        return self.path / "classifier"

    @property
    def scores(self) -> Path:
        """Parquet: one score per corpus document."""
        return self.path / "scores.parquet"

    @property
    def filtered(self) -> Path:
        """JSONL: the documents kept by the filter (same fields as the corpus)."""
        return self.path / "filtered.jsonl"


@dataclass(frozen=True)
class CptDir(StepDir):
    @property
    def model(self) -> Path:
        """HF folder with the full weights after continual pre-training (LoRA merged into a full-precision base)."""
        return self.path / "model"

    @property
    def adapter(self) -> Path:
        """The LoRA/QLoRA adapter (lora and qlora modes)."""
        return self.path / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def training(self) -> Path:
        """What the training processes report back (steps, loss curve, trainable parameters, packing)."""
        return self.path / "training.json"

    @property
    def heldout_medical(self) -> Path:
        """Held-out filtered documents (never trained on): medical text for perplexity, here and in 04_merge."""
        return self.path / "heldout_medical.jsonl"

    @property
    def heldout_general(self) -> Path:
        """Rejected documents neither trained on nor replayed: general text for perplexity (forgetting)."""
        return self.path / "heldout_general.jsonl"


@dataclass(frozen=True)
class MergeDir(StepDir):
    @property
    def sweep(self) -> Path:
        """One merged model folder per sweep point."""
        return self.path / "sweep"

    @property
    def selected(self) -> Path:
        """The merged model chosen by the selection rule."""
        return self.path / "selected"


@dataclass(frozen=True)
class AlignDir(StepDir):
    """06_align: one folder per stage (``sft``, ``dpo``), each with ``model/`` (full weights) and ``adapter/``."""

    def model(self, stage: str) -> Path:
        return self.path / stage / "model"

    def adapter(self, stage: str) -> Path:
        return self.path / stage / "adapter"

    def checkpoints(self, stage: str) -> Path:
        return self.path / "checkpoints" / stage


@dataclass(frozen=True)
class SynthesizeDir(StepDir):
    @property
    def sft(self) -> Path:
        """Folder: SFT data (``train.jsonl``, ``test.jsonl`` with ``messages`` + provenance, README.md card)."""
        return self.path / "sft"

    @property
    def dpo(self) -> Path:
        """Folder: DPO data (``train.jsonl``, ``test.jsonl`` with ``prompt``/``chosen``/``rejected``, README.md card)."""
        return self.path / "dpo"

    @property
    def documents(self) -> Path:
        """JSONL: the generated clinical documents (id, type, language, text, entities, split)."""
        return self.path / "documents.jsonl"

    @property
    def examples(self) -> Path:
        """JSONL: every generated example with its answer, injected faults and filter verdicts (kept or not)."""
        return self.path / "examples.jsonl"

    @property
    def schemas(self) -> Path:
        """JSON: the JSON Schema of each task (for 06/07 to validate JSON answers)."""
        return self.path / "schemas.json"

    @property
    def cache(self) -> Path:
        """Folder of cached LLM replies (teacher, judge, model answers), so a killed run resumes."""
        return self.path / "cache"


@dataclass(frozen=True)
class EvaluateDir(StepDir):
    @property
    def items(self) -> Path:
        """Per-item records: ``<variant>.mcq.jsonl`` (benchmarks), ``<variant>.generations.jsonl`` (held-out tasks),
        ``<model>_vs_<baseline>.judge.jsonl`` (judge verdicts) — what 08_failure_analysis reads."""
        return self.path / "items"

    @property
    def table(self) -> Path:
        """JSON: one row per variant with every benchmark, task score and win-rate (and failures, with reasons)."""
        return self.path / "table.json"


@dataclass(frozen=True)
class RunDir:
    """The run directory: ``RunDir(path).prepare.corpus`` etc."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path).resolve())

    def step(self, name: str) -> StepDir:
        cls = _STEP_DIR_CLASSES.get(name, StepDir)
        return cls(self.path / STEP_DIRS[name])

    @property
    def prepare(self) -> PrepareDir:
        return self.step("prepare")  # type: ignore[return-value]

    @property
    def annotate(self) -> AnnotateDir:
        return self.step("annotate")  # type: ignore[return-value]

    @property
    def classify(self) -> ClassifyDir:
        return self.step("classify")  # type: ignore[return-value]

    @property
    def cpt(self) -> CptDir:
        return self.step("cpt")  # type: ignore[return-value]

    @property
    def merge(self) -> MergeDir:
        return self.step("merge")  # type: ignore[return-value]

    @property
    def align(self) -> AlignDir:
        return self.step("align")  # type: ignore[return-value]

    @property
    def evaluate(self) -> EvaluateDir:
        return self.step("evaluate")  # type: ignore[return-value]

    @property
    def synthesize(self) -> SynthesizeDir:
        return self.step("synthesize")  # type: ignore[return-value]

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def notebooks(self) -> Path:
        return self.path / "notebooks"

    # ---- manifest ----------------------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"steps": {}}
        return read_json(self.manifest_path)

    def _manifest_lock(self) -> FileLock:
        """An OS file lock around read-modify-write of the manifest (threads and processes alike)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return FileLock(self.path / ".manifest.lock", thread_local=False)

    def update_manifest(self, change: Any) -> dict[str, Any]:
        """Apply ``change(manifest)`` (in place) under the manifest lock and write it atomically; return it."""
        with self._manifest_lock():
            manifest = self.read_manifest()
            change(manifest)
            manifest["updated"] = now_iso()
            write_json(self.manifest_path, manifest)
        return manifest

    def update_step(self, step: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest entry of ``step`` and write the manifest atomically."""
        manifest = self.update_manifest(lambda m: m.setdefault("steps", {}).setdefault(step, {}).update(fields))
        return manifest["steps"][step]

    def set_run_info(self, **fields: Any) -> None:
        self.update_manifest(lambda m: m.update(fields))

    def collect_artifacts(self, step: str) -> list[dict[str, Any]]:
        """Every visible file of a step's folder with its size, mtime and sha256 (paths relative to the run)."""
        return [file_record(f, self.path) for f in visible_files(self.step(step).path)]

    def artifact_changes(self, step: str, entry: dict[str, Any]) -> list[FileChange]:
        """What differs between the step's folder and the artifacts its manifest entry records (see
        :func:`verify_files`); a step that recorded no artifact counts as missing them."""
        if not entry.get("artifacts"):
            return [FileChange(str(self.step(step).path.relative_to(self.path)), "missing")]
        return verify_files(self.path, entry["artifacts"], self.step(step).path)

    def artifacts_intact(self, entry: dict[str, Any]) -> bool:
        """Whether every recorded artifact is still there with its recorded bytes (see :func:`verify_files`)."""
        return bool(entry.get("artifacts")) and not verify_files(self.path, entry["artifacts"])

    # ---- ownership and lock ------------------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether the folder holds a medslm run (a manifest with a ``steps`` section)."""
        try:
            return isinstance(self.read_manifest().get("steps"), dict) and self.manifest_path.exists()
        except (ValueError, OSError, AttributeError):
            return False

    def check_ownership(self, force: bool = False) -> None:
        """Refuse a folder that exists, is not empty and is not a medslm run (its files would be overwritten),
        unless ``force``; the file-system root and the home folder are refused always."""
        if self.path in (Path(self.path.anchor), Path.home().resolve()):
            raise NotARunDir(f"output_dir {self.path} is the {'home' if self.path != Path(self.path.anchor) else 'root'}"
                             " folder; point output_dir at a folder of its own, e.g. outputs/<run name>")
        if not self.path.exists() or self.is_run() or force:
            return
        if not self.path.is_dir():
            raise NotARunDir(f"output_dir {self.path} is a file, not a folder")
        content = sorted(p.name for p in self.path.iterdir() if p.name not in LOCK_FILES)
        if content:
            shown = ", ".join(content[:5]) + (f" and {len(content) - 5} more" if len(content) > 5 else "")
            raise NotARunDir(f"output_dir {self.path} is not empty and is not a medslm run (no manifest.json; it "
                             f"holds {shown}); a run would overwrite files there. Choose an empty or new folder, or "
                             "pass --force to write into it anyway")

    def lock(self, **info: Any) -> contextlib.AbstractContextManager[dict[str, Any] | None]:
        """Hold the run folder's lock while the block runs (see :func:`medslm.runlock.hold_lock`): yields the holder
        info of a previous run that died without releasing it, else None; a second run raises :class:`RunDirBusy`."""
        return hold_lock(self.path, **info)


_STEP_DIR_CLASSES: dict[str, type[StepDir]] = {
    "prepare": PrepareDir,
    "annotate": AnnotateDir,
    "classify": ClassifyDir,
    "cpt": CptDir,
    "merge": MergeDir,
    "align": AlignDir,
    "synthesize": SynthesizeDir,
    "evaluate": EvaluateDir,
}

