"""03_cpt's outputs: the adapter (lora/qlora), the full model (adapters merged into a full-precision reload of the
base, never into 4-bit weights) and a model card with the lineage."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from medslm import cards
from medslm.cpt.launch import is_main_process
from medslm.models import ModelRef, cast_saved_model, merge_lora_adapter, save_model, source_dtype
from medslm.params import CptParams
from medslm.rundir import CptDir, RunDir, write_text


def merge_adapter(base: ModelRef | str, adapter_dir: str | Path, out_dir: str | Path, tokenizer: Any = None,
                  device: str = "auto") -> Path:
    """Merge the trained adapter into a full-precision reload of ``base`` (see :func:`medslm.models.merge_lora_adapter`)."""
    base = ModelRef.of(base)
    return merge_lora_adapter(base.ref, adapter_dir, out_dir, tokenizer=tokenizer, device=device, **base.hub_kwargs())


def model_card(params: CptParams, base: ModelRef, corpus: dict[str, Any] | None, global_step: int | None,
               extra: dict[str, Any] | None = None) -> str:
    """A README.md (model card) recording the lineage of the CPT model."""
    corpus = corpus or {}
    summary = ("Full weights after continual pre-training of the base model on the filtered clinical corpus"
               + (" (LoRA adapter merged into a full-precision reload of the base)." if params.mode != "full" else "."))
    lineage = {
        "corpus": corpus.get("path", "-"), "corpus sha256": corpus.get("sha256", "-"),
        "corpus documents (train / held out)": f"{corpus.get('train_documents', '-')} / {corpus.get('heldout_documents', '-')}",
        "replayed documents (rejected by the filter)": corpus.get("replay_documents", 0), "mode": params.mode,
        "optimisation steps": global_step if global_step is not None else "-", **(extra or {}),
    }
    return cards.model_card("medslm continual pre-training (03_cpt)", summary, base, params,
                            ["continual-pretraining", params.mode], lineage)


def finalize(model: Any, tokenizer: Any, params: CptParams, out: CptDir | RunDir | str | Path,
             base: ModelRef | str, corpus: dict[str, Any] | None = None, global_step: int | None = None,
             trainer: Any = None, device: str = "auto") -> Path:
    """Write the step's models and return the full model folder (``cpt.model``).

    lora/qlora: the adapter (+ tokenizer) goes to ``cpt.adapter``, then :func:`merge_adapter` merges it into a
    full-precision reload of the base and saves ``cpt.model``. full: the model is saved to ``cpt.model``. With a
    ``trainer`` (needed under FSDP/DDP: call on every process) the first save goes through ``trainer.save_model``,
    which gathers sharded weights; merging and the model card happen on the main process only. ``corpus``:
    ``{"path", "sha256", "train_documents", "heldout_documents"}`` for the model card.
    """
    cpt_dir = out.cpt if isinstance(out, RunDir) else out if isinstance(out, CptDir) else CptDir(Path(out))
    base = ModelRef.of(base)
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
    cast_saved_model(cpt_dir.model, source_dtype(base) if params.save_dtype == "source" else params.save_dtype)
    write_text(cpt_dir.model / "README.md", model_card(params, base, corpus, global_step))
    return cpt_dir.model


