"""03_cpt's training modes: full (every weight), LoRA (adapters on a frozen base) and QLoRA (adapters on a 4-bit
NF4 base), with checks that the intended weights — and only those — train."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medslm.cpt.launch import world_size
from medslm.models import (
    ModelRef,
    bnb_4bit_config,
    choose_precision,
    load_model,
    load_tokenizer,
    lora_config,
    parameter_count,
    resolve_device,
)
from medslm.params import CptParams


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


def peft_lora_config(model: Any, params: CptParams):
    """The ``peft.LoraConfig`` that modes lora/qlora attach (``target_modules`` of every layer, scaled by
    alpha / r; with ``train_embeddings`` the embeddings and LM head train as full copies, tied ones stay tied)."""
    modules_to_save, tied = _modules_to_save(model, params)
    cfg = lora_config(list(params.target_modules), r=params.lora_r, alpha=params.lora_alpha,
                      dropout=params.lora_dropout, modules_to_save=modules_to_save)
    return dataclasses.replace(cfg, ensure_weight_tying=tied)


def setup_model(params: CptParams, base: ModelRef | str, device: str = "auto") -> tuple[Any, Any]:
    """Load the base and make it trainable for ``params.mode``; returns ``(model, tokenizer)``.

    * ``full``: every weight trains (float32 master weights; bf16/fp16 by autocast on a GPU).
    * ``lora``: peft LoRA adapters on ``target_modules`` of a frozen base (in the training precision).
    * ``qlora``: the base loaded in 4-bit NF4 (bitsandbytes; float32 compute on a CPU),
      ``peft.prepare_model_for_kbit_training``, then LoRA adapters.

    With ``train_embeddings`` the input embeddings and LM head are trained too (peft ``modules_to_save``; a tied
    model keeps them tied). Target modules are checked against the loaded model first.
    """
    base = ModelRef.of(base)
    setup = check_setup(params, device)
    dev, precision = setup["device"], setup["precision"]
    hub = base.hub_kwargs()
    tokenizer = load_tokenizer(base.ref, **hub)
    # Several processes: load on the CPU; the Trainer/accelerate moves (or shards) the model onto each rank's GPU.
    load_device = "cpu" if world_size() > 1 else dev
    if params.mode == "qlora":
        from peft import prepare_model_for_kbit_training

        model = load_model(base.ref, device=dev, precision=precision,
                           quantization_config=bnb_4bit_config(dev, precision), **hub)
        check_target_modules(model, params.target_modules)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=params.gradient_checkpointing)
    else:
        # full: float32 master weights, the Trainer autocasts to bf16/fp16 (pure-bf16 AdamW loses small updates);
        # lora: the frozen base in the compute precision, adapters in float32.
        load_precision = "fp32" if params.mode == "full" else precision
        model = load_model(base.ref, device=load_device, precision=load_precision, **hub)
        if params.mode == "lora":
            check_target_modules(model, params.target_modules)
            if params.gradient_checkpointing:
                model.enable_input_require_grads()
    model.config.use_cache = False
    if params.mode in ("lora", "qlora"):
        from peft import get_peft_model

        cfg = peft_lora_config(model, params)
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
        count = parameter_count(p)  # a 4-bit (qlora) weight: the weights it stands for, not its packed bytes
        total += count
        if not p.requires_grad:
            continue
        trainable += count
        names.append(n)
        parts = n.split(".")
        kind = "lora" if "lora_" in n else "embeddings" if emb in parts or (head and head in parts) else "other"
        by_kind[kind] += count
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


