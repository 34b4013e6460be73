"""03_cpt: continual pre-training (CPT) of the base model on the filtered corpus — full, LoRA or QLoRA.

The recipe, in the order a notebook calls it::

    base = resolve_base(p, rd)                                   # hub id / local folder of the model to train
    records = load_documents(rd.classify.filtered)
    train_docs, heldout_docs = split_documents(records, p.heldout_fraction, seed)
    replay, info = load_replay(p, rd, records, len(train_docs), seed)  # rejected corpus documents against forgetting
    docs = training_texts(train_docs, replay, seed)
    stats = packing_stats(tokenizer, docs, p.block_size)          # 100 % of the tokens land in blocks
    model, tokenizer = setup_model(p, base, device)                # full / LoRA / QLoRA (NF4), checks the targets
    report = check_trainable(model, p)                             # raises when the intended weights are frozen
    outcome = train(model, tokenizer, docs, p, checkpoint_dir(rd, p, ...), device, seed)
    finalize(outcome.model, tokenizer, p, rd.cpt, base, ...)      # adapter + merged full-precision model + card
    metrics = compare(evaluate_model(base...), evaluate_model(merged...))   # probes, perplexity, forgetting

:func:`run_step` runs all of it (used by ``python -m medslm.cpt_launch PROFILE``, also under ``accelerate
launch`` for several GPUs; see :func:`launch_command` and ``params/accelerate/``).

Design choices: documents are packed ``group_texts`` style (no token lost, see :mod:`medslm.training`); a QLoRA
adapter is merged into a *full-precision* reload of the base, never into the 4-bit weights; checkpoints live in
``03_cpt/checkpoints/run-<fingerprint>`` so ``resume`` only continues a run with the same parameters and data;
``replay_fraction`` mixes documents the filter rejected into the training data (general-text replay, the usual
remedy for catastrophic forgetting in continual pre-training; held-out medical documents are never replayed).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shlex
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from medslm.models import (
    bnb_4bit_config,
    choose_precision,
    is_local,
    load_model,
    load_tokenizer,
    lora_config,
    merge_lora_adapter,
    model_stats,
    resolve_device,
    save_model,
)
from medslm.params import CptParams
from medslm.rundir import (
    CptDir,
    RunDir,
    package_versions,
    read_json,
    read_jsonl,
    sha256_file,
    write_json,
    write_text,
)
from medslm.training import (
    TrainSettings,
    build_trainer,
    last_checkpoint,
    loss_curve,
    pack_blocks,
    packed_dataset,
    tokenize_documents,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCELERATE_DIR = REPO_ROOT / "params" / "accelerate"

# --------------------------------------------------------------------------------------------------------------
# Processes (one in a notebook; several under accelerate launch / torchrun)
# --------------------------------------------------------------------------------------------------------------


def world_size() -> int:
    """Number of training processes (``WORLD_SIZE`` set by accelerate launch / torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the process that writes files and evaluates (rank 0)."""
    return int(os.environ.get("RANK", "0")) == 0


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


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

    def key(r: dict[str, Any]) -> str:
        return f"id:{r['id']}" if r.get("id") is not None else f"text:{r['text']}"

    keep = {key(r) for r in kept}
    rejected = [r for r in records if key(r) not in keep]
    rng = random.Random(f"replay:{seed}")
    return rng.sample(rejected, min(n, len(rejected)))


def load_replay(params: CptParams, rundir: RunDir | str | Path, kept: Sequence[dict[str, Any]], n_train: int,
                seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The replay documents of a run (:func:`replay_documents` from 00_prepare's corpus) and a record of them:
    ``{"fraction", "documents", "source", "sha256"}``. With ``replay_fraction`` > 0 but no corpus file there is no
    replay; a warning says so and the record carries the reason (``skipped``)."""
    import warnings

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
    replay = replay_documents(rd.prepare.corpus, kept, params.replay_fraction, n_train, seed)
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


# --------------------------------------------------------------------------------------------------------------
# Models: base, modes, checks
# --------------------------------------------------------------------------------------------------------------


def resolve_base(params: CptParams, rundir: RunDir | str | Path | None = None) -> dict[str, Any]:
    """The model to train: ``params.base`` when set, else the base model of 00_prepare (``base_model.json``, or the
    ``00_prepare/model`` folder of the toy world). Returns ``{"ref", "revision", "trust_remote_code"}``."""
    if params.base:
        return {"ref": params.base, "revision": params.revision, "trust_remote_code": params.trust_remote_code}
    if rundir is None:
        raise ValueError("base is None (= the model of 00_prepare) but no run directory was given")
    rd = rundir if isinstance(rundir, RunDir) else RunDir(rundir)
    if rd.prepare.base_model.is_file():
        info = read_json(rd.prepare.base_model)
        ref = str(info["ref"])
        if not Path(ref).is_absolute() and (rd.path / ref).is_dir():
            ref = str(rd.path / ref)
        return {"ref": ref, "revision": info.get("revision"),
                "trust_remote_code": bool(info.get("trust_remote_code", False)) or params.trust_remote_code}
    if (rd.prepare.model / "config.json").is_file():
        return {"ref": str(rd.prepare.model), "revision": None, "trust_remote_code": params.trust_remote_code}
    raise FileNotFoundError(
        f"no base model: {rd.prepare.base_model} and {rd.prepare.model} are missing; run 00_prepare or set cpt.base"
    )


def check_setup(params: CptParams, device: str = "auto") -> dict[str, str]:
    """Checks that need the machine (the parameters alone are checked by :class:`CptParams`): device, precision,
    processes. Returns ``{"device", "precision"}``; raises ``ValueError`` with what to change."""
    dev = resolve_device(device)
    if dev == "cpu" and params.precision in ("fp16", "bf16") and params.mode == "qlora":
        raise ValueError(
            f"mode qlora with precision {params.precision} on a CPU: bitsandbytes computes NF4 layers on the CPU in "
            "float32 here; use precision auto or fp32"
        )
    try:
        precision = choose_precision(dev, params.precision)
    except ValueError as e:
        raise ValueError(f"mode {params.mode}: {e}") from None
    if world_size() > 1 and params.mode == "qlora":
        raise ValueError("mode qlora cannot run in several processes here; use lora/full or one process")
    if dev == "cpu" and params.accelerate_config and "fsdp" in Path(params.accelerate_config).name.lower() \
            and world_size() > 1:
        raise ValueError("FSDP needs GPUs; on a CPU use several processes without an FSDP config (DDP, gloo)")
    return {"device": dev, "precision": precision}


def linear_module_names(model: Any) -> list[str]:
    """Short names (last path component) of the linear layers LoRA can target (nn.Linear, incl. bitsandbytes
    Linear4bit, and GPT-2 style Conv1D), sorted."""
    names = set()
    for full, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def check_target_modules(model: Any, target_modules: Sequence[str]) -> dict[str, int]:
    """How many layers each target name matches; raises ``ValueError`` naming the available linear layers when a
    target matches none (peft would otherwise fail later or, for a partial list, silently train less)."""
    counts = {t: 0 for t in target_modules}
    for full, module in model.named_modules():
        short = full.rsplit(".", 1)[-1]
        if short in counts and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"):
            counts[short] += 1
    missing = [t for t, n in counts.items() if n == 0]
    if missing:
        raise ValueError(
            f"target_modules {missing} match no linear layer of {type(model).__name__}; "
            f"available: {linear_module_names(model)}"
        )
    return counts


def embedding_module_names(model: Any) -> tuple[str, str | None, bool]:
    """(input embedding name, output embedding name or None, tied?) as short module names, e.g.
    ``("embed_tokens", "lm_head", True)``."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    names = {id(m): n.rsplit(".", 1)[-1] for n, m in model.named_modules()}
    tied = head is not None and head.weight is emb.weight
    return names[id(emb)], (names[id(head)] if head is not None else None), tied


def _modules_to_save(model: Any, params: CptParams) -> tuple[list[str] | None, bool]:
    if not params.train_embeddings:
        return None, False
    emb, head, tied = embedding_module_names(model)
    return [emb] + ([head] if head else []), tied


def setup_model(params: CptParams, base: dict[str, Any] | str, device: str = "auto") -> tuple[Any, Any]:
    """Load the base and make it trainable for ``params.mode``; returns ``(model, tokenizer)``.

    * ``full``: every weight trains (float32 master weights; bf16/fp16 by autocast on a GPU).
    * ``lora``: peft LoRA adapters on ``target_modules`` of a frozen base (in the training precision).
    * ``qlora``: the base loaded in 4-bit NF4 (bitsandbytes; float32 compute on a CPU),
      ``peft.prepare_model_for_kbit_training``, then LoRA adapters.

    With ``train_embeddings`` the input embeddings and LM head are trained too (peft ``modules_to_save``; a tied
    model keeps them tied). Target modules are checked against the loaded model first.
    """
    base = base if isinstance(base, dict) else {"ref": str(base), "revision": None, "trust_remote_code": False}
    setup = check_setup(params, device)
    dev, precision = setup["device"], setup["precision"]
    hub = {"revision": base.get("revision"), "trust_remote_code": bool(base.get("trust_remote_code"))}
    tokenizer = load_tokenizer(base["ref"], **hub)
    # Several processes: load on the CPU; the Trainer/accelerate moves (or shards) the model onto each rank's GPU.
    load_device = "cpu" if world_size() > 1 else dev
    if params.mode == "qlora":
        from peft import prepare_model_for_kbit_training

        model = load_model(base["ref"], device=dev, precision=precision,
                           quantization_config=bnb_4bit_config(dev, precision), **hub)
        check_target_modules(model, params.target_modules)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=params.gradient_checkpointing)
    else:
        # full: float32 master weights, the Trainer autocasts to bf16/fp16 (pure-bf16 AdamW loses small updates);
        # lora: the frozen base in the compute precision, adapters in float32.
        load_precision = "fp32" if params.mode == "full" else precision
        model = load_model(base["ref"], device=load_device, precision=load_precision, **hub)
        if params.mode == "lora":
            check_target_modules(model, params.target_modules)
            if params.gradient_checkpointing:
                model.enable_input_require_grads()
    model.config.use_cache = False
    if params.mode in ("lora", "qlora"):
        from peft import get_peft_model

        modules_to_save, tied = _modules_to_save(model, params)
        cfg = lora_config(list(params.target_modules), r=params.lora_r, alpha=params.lora_alpha,
                          dropout=params.lora_dropout, modules_to_save=modules_to_save)
        cfg = dataclasses.replace(cfg, ensure_weight_tying=tied)
        model = get_peft_model(model, cfg)
        if precision != "fp32":  # AMP needs float32 trainable weights (peft casts the adapters, not saved modules)
            for p in model.parameters():
                if p.requires_grad and p.dtype != torch.float32:
                    p.data = p.data.float()
    return model, tokenizer


def trainable_parameters(model: Any) -> dict[str, Any]:
    """Trainable parameter names and counts: ``{"trainable", "total", "share", "names", "by_kind"}`` where
    ``by_kind`` splits trainable counts into lora / embeddings (incl. LM head) / other."""
    emb, head, _ = embedding_module_names(model)
    names, by_kind, total, trainable = [], {"lora": 0, "embeddings": 0, "other": 0}, 0, 0
    for n, p in model.named_parameters():
        total += p.numel()
        if not p.requires_grad:
            continue
        trainable += p.numel()
        names.append(n)
        parts = n.split(".")
        kind = "lora" if "lora_" in n else "embeddings" if emb in parts or (head and head in parts) else "other"
        by_kind[kind] += p.numel()
    return {"trainable": trainable, "total": total, "share": trainable / total if total else 0.0,
            "names": names, "by_kind": by_kind}


def check_trainable(model: Any, params: CptParams) -> dict[str, Any]:
    """The trainable-parameter report; raises ``RuntimeError`` when nothing trains or the intended weights are
    frozen (full: a frozen weight; lora/qlora: no adapter, or embeddings/LM head frozen with train_embeddings)."""
    report = trainable_parameters(model)
    if report["trainable"] == 0:
        raise RuntimeError("no parameter is trainable: training would change nothing")
    if params.mode == "full":
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        if frozen:
            raise RuntimeError(f"mode full but {len(frozen)} parameters are frozen, e.g. {frozen[:5]}")
        return report
    if report["by_kind"]["lora"] == 0:
        raise RuntimeError(f"mode {params.mode} but no LoRA weight is trainable; trainable: {report['names'][:10]}")
    emb, head, tied = embedding_module_names(model)
    wanted = [emb] + ([head] if head and not tied else [])
    for name in wanted:
        ok = any(name in n.split(".") and "modules_to_save" in n for n in report["names"])
        if params.train_embeddings and not ok:
            raise RuntimeError(f"train_embeddings is on but {name!r} is not trainable; trainable: {report['names'][:10]}")
    if not params.train_embeddings and report["by_kind"]["embeddings"]:
        raise RuntimeError("train_embeddings is off but embedding weights are trainable")
    return report


def embedding_learning_rates(model: Any, params: CptParams) -> dict[str, float]:
    """Per-parameter learning rates for :func:`medslm.training.build_trainer`: the trained copies of embeddings
    and LM head (``<name>.modules_to_save``) get ``embedding_learning_rate``; empty unless train_embeddings."""
    if params.mode == "full" or not params.train_embeddings:
        return {}
    emb, head, _ = embedding_module_names(model)
    return {f"{n}.modules_to_save": params.embedding_learning_rate for n in (emb, head) if n}


# --------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------

# Fields that do not change what is trained (a run differing only in these may resume the other's checkpoints).
_NOT_FINGERPRINTED = {"resume", "save_steps", "save_total_limit", "logging_steps", "accelerate_config"}


def fingerprint(params: CptParams, corpus_sha256: str | None = None, base: dict[str, Any] | None = None) -> str:
    """A short hash of what a training run depends on: the parameters (except checkpointing and logging knobs),
    the corpus and the base model reference."""
    import hashlib
    import json

    blob = {k: v for k, v in params.model_dump(mode="json").items() if k not in _NOT_FINGERPRINTED}
    blob["corpus"] = corpus_sha256
    blob["base"] = base
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def checkpoint_dir(checkpoints: str | Path | RunDir, params: CptParams, corpus_sha256: str | None = None,
                   base: dict[str, Any] | None = None) -> Path:
    """``<checkpoints>/run-<fingerprint>``: the Trainer's output folder for this run's checkpoints."""
    root = checkpoints.cpt.checkpoints if isinstance(checkpoints, RunDir) else Path(checkpoints)
    return root / f"run-{fingerprint(params, corpus_sha256, base)}"


def train_settings(params: CptParams, output_dir: str | Path, device: str = "auto", seed: int = 0,
                   sequential: bool = False) -> TrainSettings:
    """The :class:`~medslm.training.TrainSettings` of ``params`` (``sequential``: read the data in order, one epoch:
    used for pre-instruction tuning, whose order is the curriculum)."""
    setup = check_setup(params, device)
    extra: dict[str, Any] = {"train_sampling_strategy": "sequential"} if sequential else {}
    return TrainSettings(
        output_dir=Path(output_dir),
        learning_rate=params.learning_rate,
        epochs=1.0 if sequential else params.epochs,
        max_steps=params.max_steps,
        batch_size=params.batch_size,
        grad_accum=params.grad_accum,
        warmup=params.warmup,
        weight_decay=params.weight_decay,
        precision=setup["precision"],
        device=setup["device"],
        seed=seed,
        gradient_checkpointing=params.gradient_checkpointing and params.mode != "qlora",  # qlora: enabled by peft
        save_steps=params.save_steps,
        save_total_limit=params.save_total_limit,
        logging_steps=params.logging_steps,
        extra=extra,
    )


@dataclasses.dataclass
class TrainOutcome:
    """What :func:`train` did: the trained model and Trainer, steps, resume point, loss history, throughput."""

    model: Any
    trainer: Any
    output_dir: Path
    start_step: int
    global_step: int
    resumed_from: str | None
    history: list[dict[str, Any]]
    blocks: int
    tokens_per_step: int
    seconds: float
    phases: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary for metrics.json."""
        return {
            "output_dir": str(self.output_dir), "start_step": self.start_step, "global_step": self.global_step,
            "resumed_from": self.resumed_from, "blocks": self.blocks, "tokens_per_step": self.tokens_per_step,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round((self.global_step - self.start_step) * self.tokens_per_step / self.seconds, 1)
            if self.seconds > 0 else None,
            "phases": self.phases, "loss_curve": loss_curve(self.history),
        }


def _step_recorder():
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        """Records the global step at which training (re)starts."""

        start_step = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step = state.global_step

    return StepRecorder()


def train(model: Any, tokenizer: Any, docs: Sequence[str], params: CptParams, output_dir: str | Path,
          device: str = "auto", seed: int = 0, qa: Sequence[str] | str | Path | None = None,
          callbacks: list[Any] | None = None) -> TrainOutcome:
    """Continual pre-training with ``transformers.Trainer`` (via :func:`medslm.training.build_trainer`).

    ``docs`` are packed into ``params.block_size`` blocks. ``output_dir`` receives the checkpoints (every
    ``save_steps``); with ``params.resume`` training continues from the newest checkpoint there (same global step,
    optimizer, scheduler and data position), else the folder is cleared first. With ``pre_instruction_tuning`` the
    QA texts ``qa`` (list or JSONL path) come first (see :func:`curriculum_dataset`). Embeddings/LM head get their
    own learning rate (:func:`embedding_learning_rates`).
    """
    import time

    output_dir = Path(output_dir)
    if params.pre_instruction_tuning:
        qa_texts = read_texts(qa if qa is not None else params.qa_file)
        if not qa_texts:
            raise ValueError("pre_instruction_tuning needs QA texts: pass qa= (list or JSONL path) or set qa_file")
        dataset, phases = curriculum_dataset(tokenizer, docs, params.block_size, qa_texts, params.qa_epochs,
                                             params.epochs, seed)
    else:
        dataset = pack(tokenizer, docs, params.block_size)
        phases = {"qa_blocks": 0, "doc_blocks": len(dataset)}
    if len(dataset) == 0:
        raise ValueError("no training blocks: the documents are empty")
    resume_from = last_checkpoint(output_dir) if params.resume else None
    if not params.resume and output_dir.exists() and is_main_process():
        shutil.rmtree(output_dir)
    settings = train_settings(params, output_dir, device, seed, sequential=params.pre_instruction_tuning)
    recorder = _step_recorder()
    trainer = build_trainer(model, tokenizer, dataset, settings, callbacks=[recorder, *(callbacks or [])],
                            param_lrs=embedding_learning_rates(model, params))
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t0
    tokens_per_step = params.block_size * params.batch_size * params.grad_accum * max(trainer.args.world_size, 1)
    return TrainOutcome(
        model=trainer.model, trainer=trainer, output_dir=output_dir, start_step=recorder.start_step,
        global_step=trainer.state.global_step, resumed_from=resume_from, history=trainer.state.log_history,
        blocks=len(dataset), tokens_per_step=tokens_per_step, seconds=seconds, phases=phases,
    )


# --------------------------------------------------------------------------------------------------------------
# Output: adapter, merged full model, model card
# --------------------------------------------------------------------------------------------------------------


def merge_adapter(base: dict[str, Any] | str, adapter_dir: str | Path, out_dir: str | Path, tokenizer: Any = None,
                  device: str = "auto") -> Path:
    """Merge the trained adapter into a full-precision reload of ``base`` (see :func:`medslm.models.merge_lora_adapter`)."""
    base = base if isinstance(base, dict) else {"ref": str(base), "revision": None, "trust_remote_code": False}
    return merge_lora_adapter(base["ref"], adapter_dir, out_dir, tokenizer=tokenizer, device=device,
                              revision=base.get("revision"), trust_remote_code=bool(base.get("trust_remote_code")))


def model_card(params: CptParams, base: dict[str, Any], corpus: dict[str, Any] | None, global_step: int | None,
               extra: dict[str, Any] | None = None) -> str:
    """A README.md (model card) recording the lineage of the CPT model."""
    corpus = corpus or {}
    versions = {k: v for k, v in package_versions().items() if v}
    base_ref = base["ref"] if not is_local(base["ref"]) else f"local folder {base['ref']}"
    lines = [
        "---",
        "library_name: transformers",
        f"tags: [medslm, continual-pretraining, {params.mode}]",
        *([f"base_model: {base['ref']}"] if not is_local(base["ref"]) else []),
        "---",
        "",
        "# medslm continual pre-training (03_cpt)",
        "",
        "Full weights after continual pre-training of the base model on the filtered clinical corpus"
        + (" (LoRA adapter merged into a full-precision reload of the base)." if params.mode != "full" else "."),
        "",
        "## Lineage",
        "",
        "| | |",
        "|---|---|",
        f"| base model | {base_ref} |",
        f"| base revision | {base.get('revision') or '-'} |",
        f"| corpus | {corpus.get('path', '-')} |",
        f"| corpus sha256 | {corpus.get('sha256', '-')} |",
        f"| corpus documents (train / held out) | {corpus.get('train_documents', '-')} / {corpus.get('heldout_documents', '-')} |",
        f"| replayed documents (rejected by the filter) | {corpus.get('replay_documents', 0)} |",
        f"| mode | {params.mode} |",
        f"| params hash | {params.params_hash()} |",
        f"| optimisation steps | {global_step if global_step is not None else '-'} |",
        f"| date | {datetime.now(UTC).isoformat(timespec='seconds')} |",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "## Parameters", "", "```json"]
    import json

    lines += [json.dumps(params.model_dump(mode="json"), indent=2), "```", "", "## Software", ""]
    lines += [f"- {k} {v}" for k, v in versions.items()]
    return "\n".join(lines) + "\n"


def finalize(model: Any, tokenizer: Any, params: CptParams, out: CptDir | RunDir | str | Path,
             base: dict[str, Any] | str, corpus: dict[str, Any] | None = None, global_step: int | None = None,
             trainer: Any = None, device: str = "auto") -> Path:
    """Write the step's models and return the full model folder (``cpt.model``).

    lora/qlora: the adapter (+ tokenizer) goes to ``cpt.adapter``, then :func:`merge_adapter` merges it into a
    full-precision reload of the base and saves ``cpt.model``. full: the model is saved to ``cpt.model``. With a
    ``trainer`` (needed under FSDP/DDP: call on every process) the first save goes through ``trainer.save_model``,
    which gathers sharded weights; merging and the model card happen on the main process only. ``corpus``:
    ``{"path", "sha256", "train_documents", "heldout_documents"}`` for the model card.
    """
    cpt_dir = out.cpt if isinstance(out, RunDir) else out if isinstance(out, CptDir) else CptDir(Path(out))
    base = base if isinstance(base, dict) else {"ref": str(base), "revision": None, "trust_remote_code": False}
    first = cpt_dir.adapter if params.mode != "full" else cpt_dir.model
    if is_main_process() and first.exists():
        shutil.rmtree(first)
    if params.mode == "full":
        model.config.use_cache = True
    if trainer is not None:
        trainer.save_model(str(first))
        if is_main_process():
            tokenizer.save_pretrained(first)
    elif params.mode == "full":
        save_model(model, tokenizer, first)
    else:
        first.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(first, safe_serialization=True)
        tokenizer.save_pretrained(first)
    if not is_main_process():
        return cpt_dir.model
    if params.mode != "full":
        if cpt_dir.model.exists():
            shutil.rmtree(cpt_dir.model)
        merge_adapter(base, first, cpt_dir.model, tokenizer=tokenizer, device=device)
    write_text(cpt_dir.model / "README.md", model_card(params, base, corpus, global_step))
    return cpt_dir.model


# --------------------------------------------------------------------------------------------------------------
# Evaluation before / after
# --------------------------------------------------------------------------------------------------------------


def evaluate_model(model: Any, tokenizer: Any, probes: Sequence[dict[str, Any]] | None = None,
                   heldout: Sequence[dict[str, Any]] | None = None, corpus_heldout: Sequence[str] | None = None,
                   max_texts: int = 400) -> dict[str, Any]:
    """``{"probes": evaluate_probes(...), "perplexity": {"medical", "general", "corpus_heldout"}}`` — each part
    only when its data is given. ``corpus_heldout``: held-out documents of the filtered corpus (medical text)."""
    from medslm.evaluate import evaluate_probes, heldout_perplexity, perplexity

    out: dict[str, Any] = {}
    if probes:
        out["probes"] = evaluate_probes(model, tokenizer, probes)
    ppl: dict[str, float] = {}
    if heldout:
        ppl.update(heldout_perplexity(model, tokenizer, heldout, max_texts=max_texts))
    if corpus_heldout:
        ppl["corpus_heldout"] = perplexity(model, tokenizer, list(corpus_heldout)[:max_texts])
    if ppl:
        out["perplexity"] = ppl
    return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Before/after metrics plus ``delta`` (after − before, probes and perplexities) and ``forgetting``: the drop
    of the general and chat probe accuracies (before − after; positive = knowledge lost) and the ratio of general
    perplexity (after / before; above 1 = worse)."""
    delta: dict[str, dict[str, float]] = {}
    for part in ("probes", "perplexity"):
        b, a = before.get(part, {}), after.get(part, {})
        keys = [k for k in a if k in b and isinstance(a[k], (int, float)) and isinstance(b[k], (int, float))]
        if keys:
            delta[part] = {k: a[k] - b[k] for k in keys}
    forgetting: dict[str, float] = {}
    for g in ("general", "chat"):
        if g in before.get("probes", {}) and g in after.get("probes", {}):
            forgetting[g] = before["probes"][g] - after["probes"][g]
    if "general" in before.get("perplexity", {}) and "general" in after.get("perplexity", {}):
        forgetting["general_perplexity_ratio"] = after["perplexity"]["general"] / before["perplexity"]["general"]
    return {"before": before, "after": after, "delta": delta, "forgetting": forgetting}


# --------------------------------------------------------------------------------------------------------------
# Several GPUs: accelerate configs and the launch command
# --------------------------------------------------------------------------------------------------------------


def accelerate_config_path(config: str | Path, root: str | Path | None = None) -> Path:
    """An accelerate config file: a path, or a name in ``params/accelerate/`` (``fsdp_2gpu`` → fsdp_2gpu.yaml)."""
    p = Path(config).expanduser()
    if p.suffix in (".yaml", ".yml", ".json") and p.is_file():
        return p.resolve()
    folder = Path(root) / "params" / "accelerate" if root is not None else ACCELERATE_DIR
    for cand in (folder / config, folder / f"{config}.yaml", folder / f"{config}.yml"):
        if cand.is_file():
            return cand.resolve()
    known = sorted(f.stem for f in folder.glob("*.yaml")) if folder.is_dir() else []
    raise FileNotFoundError(f"accelerate config {str(config)!r} not found; known in {folder}: {known}")


def launch_command(profile_path: str | Path, config_file: str | Path | None = None, num_processes: int = 2,
                   run_dir: str | Path | None = None, accelerate: str = "accelerate") -> list[str]:
    """``accelerate launch --config_file CFG --num_processes N -m medslm.cpt_launch PROFILE`` as an argument list
    (``shlex.join`` it to show it). Without a config file several processes use plain DDP (``--multi_gpu``)."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    cmd = [accelerate, "launch"]
    if config_file is not None:
        cmd += ["--config_file", str(accelerate_config_path(config_file))]
    elif num_processes > 1:
        cmd += ["--multi_gpu"]
    cmd += ["--num_processes", str(num_processes), "-m", "medslm.cpt_launch", str(Path(profile_path).resolve())]
    if run_dir is not None:
        cmd += ["--run-dir", str(Path(run_dir).resolve())]
    return cmd


def format_command(cmd: Sequence[str]) -> str:
    """A launch command as one shell line."""
    return shlex.join(cmd)


def python_accelerate() -> str:
    """The ``accelerate`` executable next to this Python (the venv's), else ``accelerate`` from PATH."""
    cand = Path(sys.executable).with_name("accelerate")
    return str(cand) if cand.exists() else "accelerate"


# --------------------------------------------------------------------------------------------------------------
# The whole step
# --------------------------------------------------------------------------------------------------------------


def _free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_step(params: CptParams, run_dir: str | Path, device: str = "auto", seed: int = 0,
             qa: Sequence[str] | str | Path | None = None, evaluate: bool = True,
             callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Run 03_cpt end to end on ``run_dir`` (reads 02_classify's filtered corpus and 00_prepare's base, probes and
    held-out texts; writes checkpoints, adapter, model and — main process — metrics.json). Returns the metrics."""
    rd = RunDir(run_dir)
    base = resolve_base(params, rd)
    corpus_path = rd.classify.filtered
    records = load_documents(corpus_path)
    train_docs, heldout_docs = split_documents(records, params.heldout_fraction, seed)
    replay, replay_info = load_replay(params, rd, records, len(train_docs), seed)
    corpus = {"path": str(corpus_path), "sha256": sha256_file(corpus_path),
              "train_documents": len(train_docs), "heldout_documents": len(heldout_docs),
              "replay_documents": len(replay)}
    docs = training_texts(train_docs, replay, seed)
    model, tokenizer = setup_model(params, base, device)
    trainable = check_trainable(model, params)
    stats = packing_stats(tokenizer, docs, params.block_size)
    out_dir = checkpoint_dir(rd, params, data_sha256(corpus["sha256"], replay_info), base)
    outcome = train(model, tokenizer, docs, params, out_dir, device, seed, qa=qa, callbacks=callbacks)
    model_dir = finalize(outcome.model, tokenizer, params, rd, base, corpus, outcome.global_step,
                         trainer=outcome.trainer, device=device)
    if not is_main_process():
        return {}
    model = outcome.model = outcome.trainer = None  # free the training copy before loading models to evaluate
    _free_memory()
    metrics: dict[str, Any] = {
        "mode": params.mode, "base": base, "corpus": corpus, "replay": replay_info, "packing": stats,
        "trainable": {k: v for k, v in trainable.items() if k != "names"},
        "training": outcome.as_dict(), "model_dir": str(model_dir), "processes": world_size(),
    }
    if evaluate:
        probes = read_jsonl(rd.prepare.probes) if rd.prepare.probes.is_file() else None
        heldout = read_jsonl(rd.prepare.heldout) if rd.prepare.heldout.is_file() else None
        dev = resolve_device(device)
        before_model = load_model(base["ref"], device=dev, revision=base.get("revision"),
                                  trust_remote_code=bool(base.get("trust_remote_code")))
        before = evaluate_model(before_model, tokenizer, probes, heldout, texts(heldout_docs))
        before_model = None
        _free_memory()
        after_model = load_model(model_dir, device=dev)
        after = evaluate_model(after_model, tokenizer, probes, heldout, texts(heldout_docs))
        metrics["model_stats"] = model_stats(after_model).as_dict()
        after_model = None
        _free_memory()
        metrics.update(compare(before, after))
    write_json(rd.cpt.metrics, {"step": "cpt", "params": params.model_dump(mode="json"), **metrics})
    return metrics
