"""Can these models be merged tensor by tensor? Same architecture, sizes and vocabulary, or a clear error."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medslm.merge.configs import MergeError
from medslm.merge.parents import is_lora_adapter
from medslm.rundir import read_json


class IncompatibleModelsError(MergeError):
    """Models that differ in architecture, sizes or vocabulary; ``differences`` lists field and value per model."""

    def __init__(self, message: str, differences: list[dict[str, Any]]):
        super().__init__(message)
        self.differences = differences


ARCH_FIELDS = ("architectures", "model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
               "num_attention_heads", "num_key_value_heads", "head_dim")
VOCAB_FIELDS = ("vocab_size",)


def _model_config(model_dir: Path) -> dict[str, Any]:
    f = model_dir / "config.json"
    if not f.is_file():
        raise MergeError(f"{model_dir} has no config.json (not a Hugging Face model folder)")
    cfg = read_json(f)
    text = cfg.get("text_config")
    if isinstance(text, dict) and "hidden_size" not in cfg:  # multimodal wrappers keep the LM sizes inside
        cfg = {**text, "architectures": cfg.get("architectures"), "model_type": cfg.get("model_type")}
    return cfg


def _tokenizer_vocab(model_dir: Path) -> dict[str, int] | None:
    if not any((model_dir / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir)).get_vocab()


def check_compatible(
    model_dirs: Sequence[str | Path],
    *,
    tokenizer_source: str | None = None,
    check_tokenizer: bool = True,
) -> dict[str, Any]:
    """Check that models can be merged tensor by tensor: same architecture, layer count, hidden/intermediate sizes,
    heads, and vocabulary (config vocab_size and the tokenizer's token → id map).

    With ``tokenizer_source`` ``base`` or ``union`` (mergekit's ``tokenizer: {source: …}``) vocabulary differences
    are allowed: mergekit then aligns the embedding rows. Raises :class:`IncompatibleModelsError` naming every field
    that differs with its value per model; returns a summary (the shared values, vocab size, notes).
    """
    dirs = [Path(d) for d in model_dirs]
    if len(dirs) < 2:
        raise MergeError("check_compatible needs at least two models")
    for d in dirs:
        if is_lora_adapter(d):
            raise MergeError(f"{d} is a LoRA adapter; resolve it first (medslm.merge.resolve_parent merges it into "
                             "a full-precision copy of its base)")
    cfgs = [_model_config(d) for d in dirs]
    names = [str(m) for m in model_dirs]
    differences: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"models": names, "fields": {}, "notes": []}
    for field in ARCH_FIELDS + VOCAB_FIELDS:
        values = [c.get(field) for c in cfgs]
        if len({json.dumps(v) for v in values}) > 1:
            differences.append({"field": field, "values": dict(zip(names, values, strict=True))})
        else:
            summary["fields"][field] = values[0]

    if check_tokenizer:
        vocabs = [_tokenizer_vocab(d) for d in dirs]
        present = [(n, v) for n, v in zip(names, vocabs, strict=True) if v is not None]
        for n, v in zip(names, vocabs, strict=True):
            if v is None:
                summary["notes"].append(f"{n} has no tokenizer files; its vocabulary was not compared")
        if present:
            ref_name, ref_vocab = present[0]
            summary["tokenizer_vocab_size"] = len(ref_vocab)
            for n, v in present[1:]:
                if v != ref_vocab:
                    only_ref = [t for t in ref_vocab if t not in v]
                    only_other = [t for t in v if t not in ref_vocab]
                    moved = sum(1 for t, i in v.items() if t in ref_vocab and ref_vocab[t] != i)
                    differences.append({
                        "field": "tokenizer vocab",
                        "values": {ref_name: len(ref_vocab), n: len(v)},
                        "detail": (f"{len(only_ref)} tokens only in {ref_name} (e.g. {only_ref[:3]}), {len(only_other)} "
                                   f"only in {n} (e.g. {only_other[:3]}), {moved} shared tokens with other ids"),
                    })

    vocab_fields = {"vocab_size", "tokenizer vocab"}
    fatal = [d for d in differences if d["field"] not in vocab_fields or tokenizer_source not in ("base", "union", "model")]
    handled = [d for d in differences if d not in fatal]
    for d in handled:
        summary["notes"].append(f"{d['field']} differs ({d['values']}); tokenizer source {tokenizer_source!r} aligns it")
    if fatal:
        lines = []
        for d in fatal:
            vals = ", ".join(f"{k} = {v!r}" for k, v in d["values"].items())
            lines.append(f"  - {d['field']}: {vals}" + (f" ({d['detail']})" if d.get("detail") else ""))
        hint = []
        if any(d["field"] in vocab_fields for d in fatal):
            hint.append("the vocabularies differ: pass tokenizer_source='base' (keep the base model's tokenizer; "
                        "mergekit config `tokenizer: {source: base}`) or tokenizer_source='union' (all tokens of "
                        "both; `tokenizer: {source: union}`)")
        if any(d["field"] not in vocab_fields for d in fatal):
            hint.append("the architectures differ: SLERP, linear and task-vector merges need models of the same "
                        "architecture and sizes, e.g. a fine-tune (CPT) of the same base model")
        raise IncompatibleModelsError(
            "models cannot be merged, they differ in:\n" + "\n".join(lines) + "\n" + "\n".join(f"  → {h}" for h in hint),
            fatal,
        )
    return summary
