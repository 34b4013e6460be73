"""00_prepare for real profiles: bring a corpus (hub dataset streamed with a limit, or local JSONL/Parquet files)
into ``corpus.jsonl`` and record the base instruct model reference in ``base_model.json``.

The toy world has its own builder (:mod:`medslm.toyworld.build`); both end in the same files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medslm.models import is_local
from medslm.rundir import PrepareDir, iter_jsonl, write_json, write_jsonl


class CorpusSourceError(RuntimeError):
    """The corpus source cannot be read (hub unreachable, file missing, field missing)."""


def _doc_id(prefix: str, i: int, text: str) -> str:
    return f"{prefix}-{i:08d}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def iter_local_documents(files: list[str], text_field: str = "text") -> Iterator[dict[str, Any]]:
    """Records of local JSONL (.jsonl, .jsonl.gz, .json lines) and Parquet files; a missing text field names
    the file and line (JSONL) or the columns (Parquet)."""
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise CorpusSourceError(f"{path}: no such corpus file")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if text_field not in table.column_names:
                raise CorpusSourceError(f"{path}: no column {text_field!r}; columns: {', '.join(table.column_names)}")
            yield from table.to_pylist()
        else:
            yield from iter_jsonl(path, required=(text_field,))


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


def normalise(records: Iterator[dict[str, Any]], text_field: str, limit: int, lang: str, prefix: str) -> Iterator[dict]:
    """``{id, text, lang}`` records (other fields kept); at most ``limit``; empty texts skipped."""
    n = 0
    for rec in records:
        text = rec.get(text_field)
        if not isinstance(text, str) or not text.strip():
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
        if not params.hub_dataset:
            raise CorpusSourceError("source: hub needs hub_dataset (e.g. HuggingFaceFW/fineweb-2)")
        records = iter_hub_documents(params.hub_dataset, params.hub_config, params.hub_split)
        prefix = params.hub_dataset.split("/")[-1]
    elif params.source == "local":
        if not params.local_files:
            raise CorpusSourceError("source: local needs local_files (JSONL or Parquet paths)")
        records = iter_local_documents(params.local_files, params.text_field)
        prefix = "local"
        if all(Path(f).is_file() for f in params.local_files):  # a missing file fails below, naming it
            total = min(params.max_documents, count_local_records(params.local_files))
    else:
        raise CorpusSourceError(f"write_real_corpus handles source hub/local, not {params.source!r}")
    docs = normalise(records, params.text_field, params.max_documents, language, prefix)
    with tqdm(total=total, desc="corpus", unit="doc", mininterval=2) as bar:
        n = write_jsonl(out.corpus, _counted(docs, bar))
        bar.total = n  # the real count: the closing render shows n/n
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
