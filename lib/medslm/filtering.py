"""02_classify, part 2: filter the whole corpus with the trained classifier — in the notebook or as a datatrove job.

:func:`filter_corpus` is what the notebook calls; the profile's ``executor`` decides who does the work:

- ``local`` — :func:`score_corpus` scores the corpus in batches in this process;
- ``datatrove`` / ``slurm`` — :func:`datatrove_filter` runs the pipeline *reader → classifier scorer → scores
  (Parquet) → keep filter → kept documents (JSONL)* with ``LocalPipelineExecutor`` or ``SlurmPipelineExecutor``
  (the corpus split into ``tasks`` contiguous shards); then :func:`assemble_datatrove_outputs` reads the per-task
  files back in rank order (= corpus order) into the same ``scores.parquet`` and ``filtered.jsonl`` the local path
  writes, and the statistics come from those files.

Both paths write the same bytes (tested) and compute their statistics with one :class:`FilterStats`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from medslm.annotate import LABELS, binary_metrics, iter_corpus, load_gold
from medslm.classify import CLASSIFIER_FILE, confusion, load_classifier
from medslm.rundir import ClassifyDir, atomic_path, read_json

# One schema for both paths: ``kind``/``gold``/``held_out`` are null where the corpus has none (read_scores drops such columns).
SCORES_SCHEMA = pa.schema([("id", pa.string()), ("lang", pa.string()), ("kind", pa.string()), ("gold", pa.string()),
                           ("held_out", pa.bool_()), ("score", pa.float32()), ("keep", pa.bool_()),
                           ("chars", pa.int64()), ("tokens", pa.int64())])


def word_counts(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def score_row(rec: Mapping[str, Any], score: float, keep: bool, tokens: int) -> dict[str, Any]:
    """A row of ``scores.parquet`` for a corpus record."""
    return {"id": str(rec.get("id")), "lang": _text_or_none(rec.get("lang")), "kind": _text_or_none(rec.get("kind")),
            "gold": rec.get("label") if rec.get("label") in LABELS else None,
            "held_out": rec["held_out"] if isinstance(rec.get("held_out"), bool) else None, "score": float(score),
            "keep": bool(keep), "chars": len(rec["text"]), "tokens": int(tokens)}


def kept_record(rec: Mapping[str, Any], score: float) -> dict[str, Any]:
    """A line of ``filtered.jsonl``: id, text, the record's other fields, ``medical_score``."""
    rest = {k: v for k, v in rec.items() if k not in ("id", "text", "medical_score")}
    return {"id": rec.get("id"), "text": rec["text"], **rest, "medical_score": round(float(score), 6)}


def _json_line(rec: Mapping[str, Any]) -> str:
    return json.dumps(rec, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Statistics of a filtered corpus (from the rows of scores.parquet)
# --------------------------------------------------------------------------------------------------------------


class FilterStats:
    """Counts documents, kept documents and tokens overall, per language and per kind, and the kept set against
    gold labels (overall and outside the annotated sample) from tables with the columns of :data:`SCORES_SCHEMA`."""

    def __init__(self, sample_ids: Collection[str] | None = None, gold: Mapping[str, str] | None = None):
        self.sample = {str(i) for i in sample_ids} if sample_ids is not None else None
        self.gold = gold  # labels by id (a gold file); None: the corpus' own ``label`` (the ``gold`` column)
        self.totals: Counter[str] = Counter()
        self.per_lang: dict[str, Counter] = defaultdict(Counter)
        self.per_kind: dict[str, Counter] = defaultdict(Counter)
        self.gold_y: list[int] = []
        self.gold_k: list[bool] = []
        self.outside: list[bool] = []
        self.held_out: list[bool | None] = []

    def update(self, table: pa.Table) -> None:
        cols = table.select(["id", "lang", "kind", "gold", "held_out", "keep", "tokens"]).to_pydict()
        for i, lang, kind, gold, held_out, keep, tokens in zip(*cols.values(), strict=True):
            if self.gold is not None:
                gold = self.gold.get(str(i))
            buckets = [self.totals, self.per_lang[lang or "unknown"]]
            if kind:
                buckets.append(self.per_kind[kind])
            for bucket in buckets:
                bucket["documents"] += 1
                bucket["kept"] += int(keep)
                bucket["tokens"] += tokens
                bucket["tokens_kept"] += tokens * int(keep)
            if gold in LABELS:
                self.gold_y.append(int(gold == "medical"))
                self.gold_k.append(bool(keep))
                self.outside.append(self.sample is not None and i not in self.sample)
                self.held_out.append(held_out)

    def result(self, threshold: float, *, empty_skipped: int | None, seconds: float, score_seconds: float | None,
               token_unit: str = "words") -> dict[str, Any]:
        n = self.totals["documents"]
        stats: dict[str, Any] = {
            "threshold": threshold, "documents": n, "empty_skipped": empty_skipped, "kept": self.totals["kept"],
            "kept_fraction": round(self.totals["kept"] / n, 4) if n else 0.0,
            "tokens": self.totals["tokens"], "tokens_kept": self.totals["tokens_kept"], "token_unit": token_unit,
            "per_language": {k: dict(v) for k, v in sorted(self.per_lang.items())},
            "seconds": round(seconds, 3), "docs_per_s": round(n / seconds, 1) if seconds > 0 else None,
            "scoring_docs_per_s": round(n / score_seconds, 1) if score_seconds else None,
        }
        if self.per_kind:
            stats["per_kind"] = {k: dict(v) for k, v in sorted(self.per_kind.items())}
        if self.gold_y:
            stats["gold"] = kept_vs_gold(self.gold_y, self.gold_k)
            stats["gold"]["source"] = "gold_file" if self.gold is not None else "corpus"
            for key, mask in (("gold_outside_sample", self.outside),
                              ("gold_development", [h is False for h in self.held_out]),
                              ("gold_held_out", [h is True for h in self.held_out])):
                if any(mask):
                    stats[key] = kept_vs_gold([g for g, m in zip(self.gold_y, mask, strict=True) if m],
                                              [k for k, m in zip(self.gold_k, mask, strict=True) if m])
        return stats


def kept_vs_gold(gold_medical: Sequence[int], kept: Sequence[bool]) -> dict[str, Any]:
    """Precision, recall and F1 of the kept set against gold labels, with the confusion matrix."""
    pred = ["medical" if k else "not_medical" for k in kept]
    gold = ["medical" if g else "not_medical" for g in gold_medical]
    m = binary_metrics(gold, pred)
    m["confusion"] = confusion(gold_medical, kept)
    return m


# --------------------------------------------------------------------------------------------------------------
# The local path
# --------------------------------------------------------------------------------------------------------------


def score_corpus(classifier: Any, corpus: str | Path, *, threshold: float | None = None,
                 scores_path: str | Path | None = None, filtered_path: str | Path | None = None,
                 batch_size: int = 1024, progress: bool = False,
                 token_counter: Callable[[Sequence[str]], Sequence[int]] | None = None,
                 sample_ids: Collection[str] | None = None, gold: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Score every document of ``corpus`` in batches; keep those with ``score >= threshold`` (default: the
    classifier's). Writes per-document scores to ``scores_path`` (Parquet, :data:`SCORES_SCHEMA`) and the kept
    documents to ``filtered_path`` (JSONL, :func:`kept_record`), both atomically. Empty texts are skipped and
    counted.

    Returns statistics: documents, empty_skipped, kept, tokens (and kept), per language and per kind, docs_per_s,
    and with gold labels in the corpus (toy world) the filter's precision/recall against them (``gold``).
    ``token_counter`` maps texts to token counts (e.g. a tokenizer); default: whitespace words. With
    ``sample_ids`` (the annotated sample) the gold metrics are also given for the documents outside it
    (``gold_outside_sample``), which the classifier never trained or picked its threshold on, and, where the
    corpus marks them (toy world), on the development and the held-out sentence families apart
    (``gold_development``, ``gold_held_out``). ``gold``: labels by id (:func:`medslm.annotate.load_gold` of a gold
    file), used instead of the corpus' own.
    """
    thr = classifier.threshold if threshold is None else threshold
    if thr is None:
        raise ValueError("no threshold: pass threshold= or set classifier.threshold (choose_threshold)")
    count = token_counter or word_counts
    counts: dict[str, int] = {}
    stats = FilterStats(sample_ids, gold)
    score_seconds = 0.0
    t0 = time.perf_counter()
    with ExitStack() as stack:
        writer = pq.ParquetWriter(stack.enter_context(atomic_path(scores_path)), SCORES_SCHEMA) if scores_path else None
        if writer is not None:
            stack.callback(writer.close)
        out = stack.enter_context(stack.enter_context(atomic_path(filtered_path)).open("w", encoding="utf-8")) \
            if filtered_path else None
        if progress:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(desc="score corpus", unit="doc"))
        docs = iter_corpus(corpus, counts)
        while batch := list(itertools.islice(docs, batch_size)):
            texts = [r["text"] for r in batch]
            ts = time.perf_counter()
            scores = classifier.predict_proba(texts)
            score_seconds += time.perf_counter() - ts
            keep = scores >= thr
            table = pa.Table.from_pylist([score_row(r, s, k, t) for r, s, k, t in
                                          zip(batch, scores, keep, count(texts), strict=True)], schema=SCORES_SCHEMA)
            stats.update(table)
            if writer is not None:
                writer.write_table(table)
            if out is not None:
                out.writelines(_json_line(kept_record(r, s)) for r, s, k in zip(batch, scores, keep, strict=True) if k)
            if progress:
                bar.update(len(batch))
    return stats.result(thr, empty_skipped=counts.get("empty", 0), seconds=time.perf_counter() - t0,
                        score_seconds=score_seconds, token_unit="tokenizer" if token_counter else "words")


def read_scores(path: str | Path) -> Any:
    """The scores Parquet as a pandas DataFrame (``kind``/``gold``/``held_out`` only where the corpus has them)."""
    table = pq.read_table(path)
    empty = [c for c in ("kind", "gold", "held_out") if c in table.column_names and table[c].null_count == len(table)]
    return table.drop_columns(empty).to_pandas()


# --------------------------------------------------------------------------------------------------------------
# The same filter as a datatrove pipeline (scale-out)
# --------------------------------------------------------------------------------------------------------------


class MedicalClassifierScorer(PipelineStep):
    """datatrove step: score each document with the saved classifier (loaded lazily in each task from
    ``classifier_dir``); ``metadata["medical_score"]`` gets the score and ``metadata["keep"]`` whether it reaches
    the threshold. Every document goes on (the scores writer sees them all; :class:`KeepFilter` drops)."""

    name = "🩺 medical classifier"

    def __init__(self, classifier_dir: str | Path, threshold: float | None = None, batch_size: int = 1024,
                 device: str = "cpu"):
        super().__init__()
        self.classifier_dir, self.threshold, self.batch_size, self.device = str(classifier_dir), threshold, \
            batch_size, device

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
        from datatrove.utils.batching import batched

        classifier = load_classifier(self.classifier_dir, device=self.device)
        threshold = classifier.threshold if self.threshold is None else self.threshold
        if threshold is None:
            raise ValueError(f"{self.classifier_dir}: the classifier has no threshold; pass threshold=")
        for batch in batched(data, self.batch_size):
            with self.track_time(unit="batch"):
                scores = classifier.predict_proba([d.text for d in batch])
            for doc, score in zip(batch, scores, strict=True):
                doc.metadata["medical_score"], doc.metadata["keep"] = float(score), bool(score >= threshold)
                self.stat_update("kept" if doc.metadata["keep"] else "dropped")
                yield doc


class KeepFilter(BaseFilter):
    """datatrove filter: pass the documents :class:`MedicalClassifierScorer` marked ``keep``."""

    name = "🩺 keep medical"

    def filter(self, doc: Any) -> bool:
        return bool(doc.metadata["keep"])


def _document_record(document: Any) -> dict[str, Any]:
    meta = {k: v for k, v in (document.metadata or {}).items() if k not in ("file_path", "keep", "medical_score")}
    return {"id": document.id, "text": document.text, **meta}


def _scores_adapter(self: Any, document: Any) -> dict:
    """datatrove writer adapter: a row of scores.parquet."""
    text = document.text
    return score_row(_document_record(document), document.metadata["medical_score"], document.metadata["keep"],
                     len(text.split()))


def _kept_adapter(self: Any, document: Any) -> dict:
    """datatrove writer adapter: back to the corpus format, as :func:`kept_record` writes it locally."""
    return kept_record(_document_record(document), document.metadata["medical_score"])


def shard_jsonl(path: str | Path, folder: str | Path, n_shards: int) -> tuple[list[Path], dict[str, int]]:
    """Split a JSONL corpus into ``n_shards`` contiguous files ``shard-00000.jsonl`` … (datatrove splits work by
    file, so a single file would give one task all the work). Reads through :func:`iter_corpus`: a malformed line
    fails here naming ``file:line`` (datatrove's reader would skip it) and empty texts are left out and counted.
    Returns the files and the counts (read, empty)."""
    folder = Path(folder)
    counts: dict[str, int] = {}
    lines = [_json_line(rec) for rec in iter_corpus(path, counts)]
    folder.mkdir(parents=True, exist_ok=True)
    per = math.ceil(len(lines) / n_shards) if lines else 0
    files = []
    for i in range(n_shards):
        out = folder / f"shard-{i:05d}.jsonl"
        with atomic_path(out) as tmp:
            tmp.write_text("".join(lines[i * per:(i + 1) * per]), encoding="utf-8")
        files.append(out)
    return files, counts


def datatrove_pipeline(input_folder: str | Path, output_folder: str | Path, classifier_dir: str | Path, *,
                       threshold: float | None = None, batch_size: int = 1024, glob_pattern: str = "*.jsonl",
                       device: str = "cpu") -> list:
    """Reader (JSONL) → :class:`MedicalClassifierScorer` → scores (``output_folder/scores/<rank>.parquet``) →
    :class:`KeepFilter` → kept documents (``output_folder/kept/<rank>.jsonl``, corpus format)."""
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter, ParquetWriter

    out = Path(output_folder)
    return [
        JsonlReader(str(input_folder), glob_pattern=glob_pattern, text_key="text", id_key="id", compression=None,
                    add_file_path=False),
        MedicalClassifierScorer(classifier_dir, threshold=threshold, batch_size=batch_size, device=device),
        ParquetWriter(str(out / "scores"), output_filename="${rank}.parquet", adapter=_scores_adapter,
                      schema=SCORES_SCHEMA, max_file_size=-1, batch_size=batch_size),
        KeepFilter(),
        JsonlWriter(str(out / "kept"), output_filename="${rank}.jsonl", compression=None, adapter=_kept_adapter),
    ]


def datatrove_executor(pipeline: list, *, executor: str = "datatrove", tasks: int = 2, workers: int = -1,
                       logging_dir: str | Path, slurm: Mapping[str, Any] | None = None) -> Any:
    """A datatrove executor for ``pipeline``: ``LocalPipelineExecutor`` (``executor="datatrove"``: ``tasks``
    tasks on ``workers`` local processes) or ``SlurmPipelineExecutor`` (``executor="slurm"``: one array job of
    ``tasks`` tasks; ``slurm`` gives partition, time, cpus_per_task, mem_per_cpu_gb and optionally job_name, qos,
    venv_path, sbatch_args). Nothing runs until ``.run()``; a re-run skips tasks already completed."""
    if executor == "datatrove":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir))
    if executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = dict(slurm or {})
        if not s.get("partition"):
            raise ValueError("the slurm executor needs a partition (classify.slurm_partition)")
        activate = Path(sys.prefix) / "bin" / "activate"
        return SlurmPipelineExecutor(
            pipeline, tasks=tasks, time=s.get("time", "04:00:00"), partition=s["partition"],
            cpus_per_task=int(s.get("cpus_per_task", 4)), mem_per_cpu_gb=int(s.get("mem_per_cpu_gb", 2)),
            workers=workers, job_name=s.get("job_name", "medslm-classify"), qos=s.get("qos", "normal"),
            venv_path=s.get("venv_path") or (str(activate) if activate.is_file() else None),
            sbatch_args=s.get("sbatch_args"), logging_dir=str(logging_dir))
    raise ValueError(f"executor {executor!r} is not datatrove or slurm")


def slurm_settings(params: Any) -> dict[str, Any]:
    """The Slurm settings of a :class:`~medslm.params.ClassifyParams` as :func:`datatrove_executor` takes them."""
    return {"partition": params.slurm_partition, "time": params.slurm_time, "cpus_per_task": params.slurm_cpus_per_task,
            "mem_per_cpu_gb": params.slurm_mem_per_cpu_gb}


def wait_for_tasks(executor: Any, *, poll_s: float = 30.0, progress: bool = False,
                   job_alive: Callable[[str], bool] | None = None) -> None:
    """Block until every task of a submitted (Slurm) executor has completed. Raises RuntimeError naming the logs
    folder when the job has left the queue with tasks still incomplete (a task failed or was cancelled)."""
    alive = job_alive or _slurm_job_alive
    total = executor.world_size
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="datatrove tasks", unit="task")
    try:
        while incomplete := executor.get_incomplete_ranks():
            if bar is not None:
                bar.n = total - len(incomplete)
                bar.refresh()
            job_id = getattr(executor, "job_id", None)
            if job_id and not alive(str(job_id)):
                raise RuntimeError(f"datatrove job {job_id} ended with {len(incomplete)} of {total} tasks incomplete "
                                   f"(ranks {incomplete[:10]}…); see the task logs in {executor.logging_dir}")
            time.sleep(poll_s)
        if bar is not None:
            bar.n = total
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()


def _slurm_job_alive(job_id: str) -> bool:
    """Whether a Slurm job still has tasks queued or running (``squeue``)."""
    result = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True, check=False)
    return bool(result.stdout.strip())


def datatrove_filter(corpus: str | Path, output_folder: str | Path, classifier_dir: str | Path, *,
                     threshold: float | None = None, tasks: int = 2, workers: int = -1, executor: str = "datatrove",
                     slurm: Mapping[str, Any] | None = None, batch_size: int = 1024, run: bool = True,
                     progress: bool = False) -> dict[str, Any]:
    """Filter ``corpus`` (a JSONL file — split into ``tasks`` shards under ``output_folder/input`` — or a folder of
    ``*.jsonl`` files) with the saved classifier as a datatrove pipeline (:func:`datatrove_pipeline`); logs land in
    ``output_folder/logs``. With ``run`` it runs the pipeline (Slurm: submits the job and waits for every task)
    and checks every task completed. Returns ``{"executor", "output_folder", "logging_dir", "empty_skipped",
    "seconds"}``."""
    out, corpus = Path(output_folder), Path(corpus)
    empty = None
    if corpus.is_file():
        input_folder = out / "input"
        empty = shard_jsonl(corpus, input_folder, max(1, tasks))[1].get("empty", 0)
    else:
        input_folder = corpus
    logging_dir = out / "logs"
    pipeline = datatrove_pipeline(input_folder, out, classifier_dir, threshold=threshold, batch_size=batch_size)
    ex = datatrove_executor(pipeline, executor=executor, tasks=tasks, workers=workers, logging_dir=logging_dir,
                            slurm=slurm)
    result: dict[str, Any] = {"executor": ex, "output_folder": out, "logging_dir": logging_dir,
                              "empty_skipped": empty}
    if run:
        t0 = time.perf_counter()
        ex.run()
        if executor == "slurm":
            wait_for_tasks(ex, progress=progress)
        if incomplete := ex.get_incomplete_ranks():
            raise RuntimeError(f"datatrove: tasks {incomplete[:10]} did not complete; see the logs in {logging_dir}")
        result["seconds"] = time.perf_counter() - t0
    return result


def assemble_datatrove_outputs(output_folder: str | Path, scores_path: str | Path, filtered_path: str | Path,
                               stats: FilterStats) -> None:
    """Read the per-task outputs of :func:`datatrove_pipeline` back in rank order (contiguous shards: corpus order)
    into one ``scores_path`` Parquet and one ``filtered_path`` JSONL (written as :func:`score_corpus` writes them,
    atomically), feeding ``stats`` with every scores table."""
    out = Path(output_folder)
    with atomic_path(scores_path) as tmp_scores, pq.ParquetWriter(tmp_scores, SCORES_SCHEMA) as writer:
        for f in sorted((out / "scores").glob("*.parquet")):
            table = pq.read_table(f, schema=SCORES_SCHEMA)
            stats.update(table)
            writer.write_table(table)
    with atomic_path(filtered_path) as tmp, tmp.open("w", encoding="utf-8") as kept:
        for f in sorted((out / "kept").glob("*.jsonl")):
            with f.open(encoding="utf-8") as fh:  # re-serialised: datatrove writes compact orjson
                kept.writelines(_json_line(json.loads(line)) for line in fh if line.strip())


def _work_key(classifier_dir: Path, corpus: Path, params: Any) -> str:
    """What a datatrove work folder was made for: the classifier, the corpus file and the task split. A re-run
    with the same key resumes (completed tasks are skipped); any change starts afresh."""
    stat = corpus.stat()
    blob = json.dumps({"classifier": (classifier_dir / CLASSIFIER_FILE).read_text(encoding="utf-8"),
                       "corpus": [str(corpus.resolve()), stat.st_size, stat.st_mtime_ns],
                       "tasks": params.tasks, "batch_size": params.batch_size})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def filter_corpus(params: Any, out: ClassifyDir, corpus: str | Path, *, classifier: Any = None,
                  sample_ids: Collection[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Filter ``corpus`` with the classifier saved in ``out.classifier``, by the executor of ``params`` (a
    :class:`~medslm.params.ClassifyParams`), into ``out.scores`` and ``out.filtered``; returns the statistics.

    ``local`` scores in this process (``classifier``, when given, saves loading it again); ``datatrove`` and
    ``slurm`` run :func:`datatrove_filter` in ``out.path / "datatrove"`` and assemble its outputs. Either way the
    files and the statistics (but for timings) are the same. With ``params.gold_file`` the filter is measured
    against those labels (else against the corpus' ``label`` field, where it has one)."""
    corpus = Path(corpus)
    gold = load_gold(params.gold_file) if getattr(params, "gold_file", None) else None
    if params.executor == "local":
        clf = classifier if classifier is not None else load_classifier(out.classifier)
        return score_corpus(clf, corpus, scores_path=out.scores, filtered_path=out.filtered,
                            batch_size=params.batch_size, progress=progress, sample_ids=sample_ids, gold=gold)
    work = out.path / "datatrove"
    key = _work_key(out.classifier, corpus, params)
    key_file = work / "work_key.txt"
    if work.exists() and (not key_file.is_file() or key_file.read_text().strip() != key):
        shutil.rmtree(work)  # made for another classifier or corpus: its completed tasks must not be reused
    work.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    result = datatrove_filter(corpus, work, out.classifier, tasks=params.tasks, workers=params.workers,
                              executor=params.executor, slurm=slurm_settings(params), batch_size=params.batch_size,
                              progress=progress)
    stats = FilterStats(sample_ids, gold)
    t0 = time.perf_counter()
    assemble_datatrove_outputs(work, out.scores, out.filtered, stats)
    return stats.result(read_json(out.classifier / CLASSIFIER_FILE)["threshold"],
                        empty_skipped=result["empty_skipped"], seconds=result["seconds"] + time.perf_counter() - t0,
                        score_seconds=None)
