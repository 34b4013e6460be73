"""03_cpt's data: the filtered corpus, held-out documents, general-text replay, QA texts and packing.

Documents are packed ``group_texts`` style (no token lost, see :mod:`medslm.training`); ``replay_fraction`` mixes
documents the filter rejected into the training data (general-text replay, the usual remedy for catastrophic
forgetting in continual pre-training; held-out medical documents are never replayed). Held out, never trained on:
a share of the filtered documents (medical text) and a sample of rejected documents that are not replayed (general
text); perplexity on both measures learning and forgetting on any corpus, with or without the toy world's probes.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medslm.params import CptParams
from medslm.rundir import RunDir, read_json, read_jsonl, sha256_file
from medslm.stats import seeded_sample
from medslm.training import pack_blocks, packed_dataset, tokenize_documents


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    """The filtered corpus (JSONL with at least a ``text`` field per document)."""
    docs = read_jsonl(path, required=("text",))
    if not docs:
        raise ValueError(f"{path}: no documents to train on")
    return docs


def texts(records: Sequence[dict[str, Any]]) -> list[str]:
    """The ``text`` field of each record."""
    return [r["text"] for r in records]


def split_documents(records: Sequence[dict[str, Any]], heldout_fraction: float, seed: int = 0
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded split into (train, held-out) documents; held-out ones measure medical perplexity and are never trained
    on. At least one document is held out when the fraction is positive and at least one is kept for training."""
    records = list(records)
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    n_held = round(len(records) * heldout_fraction)
    if heldout_fraction > 0 and len(records) >= 2:
        n_held = min(max(n_held, 1), len(records) - 1)
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_held])
    train = [r for i, r in enumerate(records) if i not in held]
    heldout = [r for i, r in enumerate(records) if i in held]
    return train, heldout


def cap_documents(docs: Sequence[dict[str, Any]], max_documents: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """At most ``max_documents`` of ``docs`` (None: all), a seeded sample kept in corpus order. A sample rather
    than the first N: a filtered corpus is often ordered by source (all English notes, then German letters), and
    the first N would train on one source only."""
    if max_documents is None or len(docs) <= max_documents:
        return list(docs)
    keep = set(seeded_sample(range(len(docs)), max_documents, f"max-documents:{seed}"))
    return [d for i, d in enumerate(docs) if i in keep]


def replay_count(n_train: int, fraction: float) -> int:
    """How many replay documents make up ``fraction`` of the training documents next to ``n_train`` kept ones."""
    if not 0 <= fraction < 1:
        raise ValueError(f"replay_fraction must be in [0, 1), got {fraction}")
    return round(n_train * fraction / (1 - fraction))


def replay_documents(corpus: str | Path | Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]],
                     fraction: float, n_train: int, seed: int = 0) -> list[dict[str, Any]]:
    """General-text replay against catastrophic forgetting: documents of the web corpus (``corpus``: 00_prepare's
    corpus.jsonl or its records) that the filter did *not* keep, sampled (seeded) so that they make up ``fraction``
    of the training documents (``n_train`` kept documents + the replayed ones). Documents are matched by ``id``
    (by text when a record has none). Fewer are returned when the corpus has fewer rejected documents."""
    n = replay_count(n_train, fraction)
    if n == 0:
        return []
    records = read_jsonl(corpus, required=("text",)) if isinstance(corpus, (str, Path)) else list(corpus)

    keep = {_key(r) for r in kept}
    rejected = [r for r in records if _key(r) not in keep]
    rng = random.Random(f"replay:{seed}")
    return rng.sample(rejected, min(n, len(rejected)))


def load_replay(params: CptParams, rundir: RunDir | str | Path, kept: Sequence[dict[str, Any]], n_train: int,
                seed: int = 0, corpus: Sequence[dict[str, Any]] | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The replay documents of a run (:func:`replay_documents` from 00_prepare's corpus) and a record of them:
    ``{"fraction", "documents", "source", "sha256"}``. With ``replay_fraction`` > 0 but no corpus file there is no
    replay; a warning says so and the record carries the reason (``skipped``). ``corpus``: that file's records,
    when the caller has read them already."""
    rd = rundir if isinstance(rundir, RunDir) else RunDir(rundir)
    info: dict[str, Any] = {"fraction": params.replay_fraction, "documents": 0, "source": str(rd.prepare.corpus),
                            "sha256": None}
    if params.replay_fraction == 0:
        return [], info
    if not rd.prepare.corpus.is_file():
        info["skipped"] = f"no corpus at {rd.prepare.corpus} to replay from"
        warnings.warn(f"replay_fraction {params.replay_fraction} but {info['skipped']}: training on the filtered "
                      "corpus only", stacklevel=2)
        return [], info
    replay = replay_documents(corpus if corpus is not None else rd.prepare.corpus, kept, params.replay_fraction,
                              n_train, seed)
    info.update(documents=len(replay), sha256=sha256_file(rd.prepare.corpus))
    return replay, info


def data_sha256(corpus_sha256: str, replay_info: dict[str, Any] | None = None) -> str:
    """The data part of a run's fingerprint: the filtered corpus, plus the replay source when documents are
    replayed (so a checkpoint is only resumed on the same training data)."""
    if not replay_info or not replay_info.get("documents"):
        return corpus_sha256
    return f"{corpus_sha256}+replay:{replay_info['fraction']}:{replay_info['sha256']}"


def training_texts(train_docs: Sequence[dict[str, Any]], replay: Sequence[dict[str, Any]] = (), seed: int = 0
                   ) -> list[str]:
    """The texts to pack: the kept training documents plus the replayed ones, shuffled together (seeded) so that
    packed blocks mix both; without replay the documents keep their order."""
    if not replay:
        return texts(train_docs)
    docs = texts(train_docs) + texts(replay)
    random.Random(f"replay-mix:{seed}").shuffle(docs)
    return docs


def read_texts(source: str | Path | Sequence[str] | None) -> list[str]:
    """Texts from a list of strings, or from a JSONL file with a ``text`` field (e.g. QA pairs)."""
    if source is None:
        return []
    if isinstance(source, (str, Path)):
        return texts(read_jsonl(source, required=("text",)))
    out = list(source)
    bad = [type(t).__name__ for t in out if not isinstance(t, str)]
    if bad:
        raise TypeError(f"expected a list of strings or a JSONL path, got items of type {sorted(set(bad))}")
    return out


def pack(tokenizer: Any, docs: Sequence[str], block_size: int):
    """A ``datasets.Dataset`` of packed blocks (``input_ids``, ``attention_mask``) — see :mod:`medslm.training`."""
    return packed_dataset(tokenizer, docs, block_size)


def packing_stats(tokenizer: Any, docs: Sequence[str], block_size: int) -> dict[str, Any]:
    """How the documents pack: documents, tokens, blocks, real (non-pad) tokens and their share of the blocks.

    ``kept_share`` is the share of the corpus' tokens found in the blocks and ``stream_intact`` whether the real
    tokens of the blocks, in order, are exactly the concatenated token stream (both must be 1.0 / True).
    """
    ids = tokenize_documents(tokenizer, docs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    blocks, masks = pack_blocks(ids, block_size, pad)
    stream = [t for d in ids for t in d]
    real = [t for b, m in zip(blocks, masks, strict=True) for t, keep in zip(b, m, strict=True) if keep]
    n_tokens = len(stream)
    capacity = len(blocks) * block_size
    lengths = sorted(len(d) for d in ids)
    return {
        "documents": len(ids),
        "tokens": n_tokens,
        "block_size": block_size,
        "blocks": len(blocks),
        "real_tokens": len(real),
        "pad_tokens": capacity - len(real),
        "real_token_share": len(real) / capacity if capacity else 0.0,
        "kept_share": len(real) / n_tokens if n_tokens else 1.0,
        "stream_intact": real == stream,
        "doc_tokens_median": lengths[len(lengths) // 2] if lengths else 0,
        "doc_tokens_max": lengths[-1] if lengths else 0,
        "docs_longer_than_block": sum(n > block_size for n in lengths),
    }


def curriculum_dataset(tokenizer: Any, docs: Sequence[str], block_size: int, qa: Sequence[str], qa_epochs: float,
                       epochs: float, seed: int = 0):
    """Pre-instruction tuning data (MediPhi, after Jiang et al. 2024): the packed QA blocks for ``qa_epochs``
    passes, then the packed document blocks for ``epochs`` passes — in that order (shuffled within each pass,
    seeded), to be read sequentially for one epoch. QA and documents are packed separately so no block mixes them.
    Returns ``(dataset, {"qa_blocks": n, "doc_blocks": n})`` where n counts blocks including repetitions."""
    from datasets import Dataset

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(seed)

    def passes(src: Sequence[str], n_passes: float) -> tuple[list, list]:
        ids, mask = pack_blocks(tokenize_documents(tokenizer, src), block_size, pad)
        out_ids, out_mask = [], []
        for k in range(math.ceil(n_passes)):
            order = list(range(len(ids)))
            rng.shuffle(order)
            take = len(order) if k + 1 <= n_passes else round(len(order) * (n_passes - k))
            out_ids += [ids[i] for i in order[:take]]
            out_mask += [mask[i] for i in order[:take]]
        return out_ids, out_mask

    qa_ids, qa_mask = passes(qa, qa_epochs)
    doc_ids, doc_mask = passes(docs, epochs)
    ds = Dataset.from_dict({"input_ids": qa_ids + doc_ids, "attention_mask": qa_mask + doc_mask})
    return ds, {"qa_blocks": len(qa_ids), "doc_blocks": len(doc_ids)}


def _key(record: dict[str, Any]) -> str:
    return f"id:{record['id']}" if record.get("id") is not None else f"text:{record['text']}"


def heldout_general_documents(corpus: Sequence[dict[str, Any]], used: Sequence[dict[str, Any]], n: int,
                              seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` documents of the web ``corpus`` (its records) that are neither kept by the filter nor replayed
    (``used``): general web text the model never trains on, for general perplexity (forgetting). Seeded."""
    if n <= 0:
        return []
    taken = {_key(r) for r in used}
    rest = [r for r in corpus if _key(r) not in taken]
    return random.Random(f"heldout-general:{seed}").sample(rest, min(n, len(rest)))


def toy_qa_texts(run: RunDir) -> list[str]:
    """The toy world's QA texts for pre-instruction tuning: every non-held-out medical question with its answer."""
    from medslm.toyworld.chat import qa_texts
    from medslm.toyworld.knowledge import load_knowledge

    return qa_texts(load_knowledge(), read_json(run.prepare.world)["seed"])


def load_qa_texts(params: CptParams, run: RunDir) -> list[str] | None:
    """Pre-instruction tuning's QA texts (MediPhi): ``qa_file``, else the toy world's; None when tuning is off."""
    if not params.pre_instruction_tuning:
        return None
    if params.qa_file:
        return read_texts(params.qa_file)
    if run.prepare.world.is_file():
        return toy_qa_texts(run)
    raise ValueError("pre_instruction_tuning needs qa_file: a JSONL file with a `text` field of QA pairs "
                     f"(only the toy world, with {run.prepare.world}, derives them itself)")


@dataclass
class CptData:
    """What 03_cpt trains and measures on."""

    train_docs: list[dict[str, Any]]
    heldout_docs: list[dict[str, Any]]  # filtered (medical) documents never trained on
    heldout_general: list[dict[str, Any]]  # rejected documents neither trained on nor replayed
    replay: list[dict[str, Any]]
    replay_info: dict[str, Any]
    texts: list[str]  # what is packed: train + replay, shuffled together
    corpus: dict[str, Any]  # path, sha256 and counts, for metrics and the model card
    qa: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint_sha256(self) -> str:
        """The data part of a checkpoint fingerprint (resume only on the same data)."""
        return data_sha256(self.corpus["sha256"], self.replay_info)


def prepare_data(params: CptParams, run: RunDir, seed: int = 0) -> CptData:
    """Read 02_classify's filtered corpus, hold documents out, add replay and (optionally) QA texts."""
    path = run.classify.filtered
    records = load_documents(path)
    train_docs, heldout_docs = split_documents(records, params.heldout_fraction, seed)
    available = len(train_docs)
    train_docs = cap_documents(train_docs, params.max_documents, seed)
    web = read_jsonl(run.prepare.corpus, required=("text",)) if run.prepare.corpus.is_file() else []  # read once
    replay, replay_info = load_replay(params, run, records, len(train_docs), seed, corpus=web)
    general = heldout_general_documents(web, [*records, *replay], params.eval_max_texts, seed)
    corpus = {"path": str(path), "sha256": sha256_file(path), "train_documents": len(train_docs),
              "train_documents_available": available, "max_documents": params.max_documents,
              "heldout_documents": len(heldout_docs), "replay_documents": len(replay),
              "heldout_general_documents": len(general)}
    return CptData(train_docs=train_docs, heldout_docs=heldout_docs, heldout_general=general, replay=replay,
                   replay_info=replay_info, texts=training_texts(train_docs, replay, seed), corpus=corpus,
                   qa=load_qa_texts(params, run))
