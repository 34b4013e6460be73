"""00_prepare for real profiles: bring a corpus (hub dataset streamed with a limit, or local JSONL/Parquet files)
into ``corpus.jsonl`` and record the base instruct model reference in ``base_model.json``.

The toy world has its own builder (:mod:`medslm.toyworld.build`); both end in the same files.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medslm.models import is_local, load_model, load_tokenizer, save_model
from medslm.rundir import PrepareDir, iter_jsonl_numbered, write_json, write_jsonl


class CorpusSourceError(RuntimeError):
    """The corpus source cannot be read (hub unreachable, file missing, field missing)."""


def _doc_id(prefix: str, i: int, text: str) -> str:
    return f"{prefix}-{i:08d}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def iter_local_records(files: list[str], text_field: str = "text") -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` of local JSONL (.jsonl, .jsonl.gz, .json lines) and Parquet files, ``where`` being
    ``file:line`` (JSONL) or ``file:row N`` (Parquet). A missing text field, a binary or non-UTF-8 file and a
    truncated gzip name the file and line; an unreadable Parquet file names the file."""
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise CorpusSourceError(f"{path}: no such corpus file")
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except (pa.ArrowException, OSError) as e:
                raise CorpusSourceError(f"{path}: not a readable Parquet file ({e})") from None
            if text_field not in table.column_names:
                raise CorpusSourceError(f"{path}: no column {text_field!r}; columns: {', '.join(table.column_names)}")
            for row, rec in enumerate(table.to_pylist(), start=1):
                yield f"{path}:row {row}", rec
        else:
            for lineno, rec in iter_jsonl_numbered(path, required=(text_field,)):  # JsonlError names file:line
                yield f"{path}:{lineno}", rec


def iter_local_documents(files: list[str], text_field: str = "text") -> Iterator[dict[str, Any]]:
    """The records of :func:`iter_local_records`, without where they came from."""
    for _, rec in iter_local_records(files, text_field):
        yield rec


def iter_hub_documents(dataset: str, config: str | None, split: str) -> Iterator[dict[str, Any]]:
    """Stream a hub dataset; an unreachable hub is a clear error naming the dataset."""
    from datasets import load_dataset

    try:
        ds = load_dataset(dataset, name=config, split=split, streaming=True)
        yield from ds
    except Exception as e:  # datasets raises many kinds for network trouble
        raise CorpusSourceError(
            f"could not stream hub dataset {dataset!r} (config {config!r}, split {split!r}): {type(e).__name__}: {e}. "
            "The hub must be reachable (this machine has no internet?); otherwise use source: local with "
            "local_files, or fill the HF cache and set HF_HUB_OFFLINE=1."
        ) from e


@dataclass
class SkippedRecords:
    """Records without a usable text, counted by reason (``empty``, ``null``, ``not a string: int``) with the
    first few places they were found."""

    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str, keep: int = 5) -> None:
        self.reasons[reason] += 1
        if len(self.examples) < keep:
            self.examples.append(f"{where} ({reason})")

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def summary(self, text_field: str) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())
        return (f"skipped {self.total} record(s) whose {text_field!r} is not a usable text ({reasons}); "
                f"first: {', '.join(self.examples)}")


def text_problem(text: Any) -> str | None:
    """Why a record's text cannot become a document (None when it can)."""
    if text is None:
        return "null"
    if not isinstance(text, str):
        return f"not a string: {type(text).__name__}"
    return None if text.strip() else "empty"


def normalise(records: Iterator[dict[str, Any] | tuple[str, dict[str, Any]]], text_field: str, limit: int,
              lang: str, prefix: str, skipped: SkippedRecords | None = None) -> Iterator[dict]:
    """``{id, text, lang}`` records (other fields kept); at most ``limit``. Records whose text is missing, null,
    not a string or empty are skipped and counted in ``skipped`` (records may come as ``(where, record)``)."""
    n = 0
    for i, item in enumerate(records, start=1):
        where, rec = item if isinstance(item, tuple) else (f"record {i}", item)
        text = rec.get(text_field)
        problem = text_problem(text)
        if problem is not None:
            if skipped is not None:
                skipped.add(where, problem)
            continue
        out = {k: v for k, v in rec.items() if k != text_field and isinstance(v, (str, int, float, bool))}
        out.update(id=str(rec.get("id") or _doc_id(prefix, n, text)), text=text, lang=rec.get("lang") or lang)
        yield out
        n += 1
        if n >= limit:
            return


def count_local_records(files: list[str]) -> int:
    """Records in local corpus files without parsing them: Parquet row counts from the file metadata, JSONL
    non-blank lines (a progress bar's total; documents with empty text are among them)."""
    import gzip

    total = 0
    for name in files:
        path = Path(name)
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        else:
            with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
                total += sum(1 for line in f if line.strip())
    return total


def write_real_corpus(params: Any, out: PrepareDir, language: str) -> int:
    """Write ``corpus.jsonl`` from a hub or local source; return the document count.

    The progress bar's total is ``max_documents`` capped by the records of local files, and is set to the
    documents written at the end (a corpus smaller than ``max_documents`` does not end at ``3991/10000``)."""
    total: int | None = params.max_documents
    if params.source == "hub":
        records = iter_hub_documents(params.hub_dataset, params.hub_config, params.hub_split)
        prefix = params.hub_dataset.split("/")[-1]
    elif params.source == "local":
        records = iter_local_records(params.local_files, params.text_field)
        prefix = "local"
        if all(Path(f).is_file() for f in params.local_files):  # a missing file fails below, naming it
            total = min(params.max_documents, count_local_records(params.local_files))
    else:
        raise CorpusSourceError(f"write_real_corpus handles source hub/local, not {params.source!r}")
    skipped = SkippedRecords()
    docs = normalise(records, params.text_field, params.max_documents, language, prefix, skipped)
    with tqdm(total=total, desc="corpus", unit="doc", mininterval=2) as bar:
        n = write_jsonl(out.corpus, _counted(docs, bar))
        bar.total = n  # the real count: the closing render shows n/n
    if skipped.total:
        print(skipped.summary(params.text_field))
        write_json(out.path / "skipped_records.json", {"total": skipped.total, "reasons": dict(skipped.reasons),
                                                        "examples": skipped.examples})
    return n


def _counted(records: Iterator[dict], bar: Any) -> Iterator[dict]:
    for rec in records:
        yield rec
        bar.update()


def record_base_model(d: PrepareDir, ref: str | Path, revision: str | None = None,
                      trust_remote_code: bool = False) -> dict[str, Any]:
    """Write ``base_model.json``: the instruct model later steps start from. A folder inside the run folder is
    recorded relative to it (a copied run uses its own copy), other folders as absolute paths."""
    local = is_local(ref)
    if local:
        folder, run_dir = Path(ref).resolve(), d.path.parent.resolve()
        ref = folder.relative_to(run_dir) if folder.is_relative_to(run_dir) else folder
    info = {"ref": str(ref), "local": local, "revision": revision, "trust_remote_code": trust_remote_code}
    write_json(d.base_model, info)
    return info


def _hub_options(params: Any) -> dict[str, Any]:
    """How ``params.base_model`` is loaded: its revision and whether its own code may run."""
    return {"revision": params.revision, "trust_remote_code": params.trust_remote_code}


def write_corpus(params: Any, out: PrepareDir, seed: int, language: str) -> tuple[Any | None, Any | None]:
    """Write the run's corpus. The toy world generates it with its probes and held-out texts, written in the base
    model's chat format (the toy tokenizer, trained here, or a real base model's own) and returns ``(world,
    tokenizer)``; a real source reads or streams its documents and returns ``(None, None)``."""
    if params.source != "toyworld":
        write_real_corpus(params, out, language)
        return None, None
    from medslm.toyworld import build

    world = build.make_world_data(params, seed)
    tokenizer = (load_tokenizer(params.base_model, **_hub_options(params))
                 if params.base_model else build.train_world_tokenizer(world, params.vocab_size))
    build.write_world_files(out, world, tokenizer, params.max_probes_per_relation)
    return world, tokenizer


@dataclass
class BaseModel:
    """The instruct model later steps start from: its recorded reference (``base_model.json``), its tokenizer, and
    the loaded model where the toy world's probes will score it (with the pretraining loss curve when trained here)."""

    ref: dict[str, Any]
    tokenizer: Any
    model: Any | None = None
    loss_curve: list[tuple[int, float]] | None = None
    pretrain_s: float | None = None


def prepare_base_model(params: Any, out: PrepareDir, world: Any | None, tokenizer: Any | None,
                       device: str) -> BaseModel:
    """Pretrain and save the tiny Llama (toy world without ``base_model``), or record ``params.base_model`` and load
    its tokenizer (unless ``write_corpus`` loaded it), plus its weights when the toy world's probes are to score it
    (other corpora have no probes)."""
    if params.source == "toyworld" and not params.base_model:
        from medslm.toyworld import build
        from medslm.training import loss_curve

        model, history, seconds = build.pretrain_tiny_model(params, world, tokenizer, device=device)
        save_model(model, tokenizer, out.model)
        return BaseModel(record_base_model(out, out.model), tokenizer, model, loss_curve(history), seconds)
    ref = record_base_model(out, params.base_model, params.revision, params.trust_remote_code)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(params.base_model, **_hub_options(params))
    model = load_model(params.base_model, device=device, **_hub_options(params)) if params.source == "toyworld" else None
    return BaseModel(ref, tokenizer, model)
