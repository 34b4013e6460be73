"""The models a merge reads: resolved once to local, full-precision, safetensors folders.

A parent is named by a :class:`medslm.models.ModelRef` (hub id or folder, revision, trust_remote_code); a hub model
is fetched (config, tokenizer and safetensors only), a LoRA adapter is merged into a float32 reload of its base
once and cached, and a folder without safetensors weights is refused before any merge starts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from medslm.merge.configs import MergeError
from medslm.models import ModelRef, base_model_ref, resolve_model
from medslm.params import MergeParams
from medslm.rundir import RunDir, read_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class Parent:
    """A model to merge: its role (instruct, cpt, expert 1, …), the reference it was named by, and the local
    full-precision safetensors folder mergekit reads."""

    role: str
    ref: ModelRef
    path: Path

    def as_dict(self) -> dict[str, object]:
        return {"role": self.role, **self.ref.as_dict(), "path": str(self.path)}


def is_lora_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a peft adapter folder (has adapter_config.json)."""
    return (Path(path) / "adapter_config.json").is_file()


def require_safetensors(model_dir: str | Path) -> Path:
    """Refuse a model folder without ``*.safetensors`` weights (pickled ``.bin``/``.pt`` checkpoints can run code
    when loaded); returns the folder."""
    model_dir = Path(model_dir)
    if any(model_dir.glob("*.safetensors")):
        return model_dir
    pickled = sorted(f.name for f in model_dir.iterdir() if f.suffix in PICKLE_SUFFIXES) if model_dir.is_dir() else []
    if pickled:
        raise MergeError(f"{model_dir} holds only pickled weights ({', '.join(pickled[:3])}); medslm merges "
                         "safetensors only (a pickle can run code when loaded). Convert it once where you trust it: "
                         "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(new_folder)")
    raise MergeError(f"{model_dir} has no .safetensors weight files (not a Hugging Face model folder?)")


def local_model_dir(ref: ModelRef) -> Path:
    """A local folder for a reference: the folder itself, or the hub snapshot (at its revision) of the config,
    tokenizer and safetensors files (needs network or a filled HF cache)."""
    path = Path(ref.ref).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref.ref, revision=ref.revision,
                                      allow_patterns=["*.json", "*.safetensors", "tokenizer.model"]))
    except Exception as e:
        raise MergeError(f"model {ref.ref!r} is not a local folder and could not be fetched from the hub ({e}); "
                         "pass a local folder or allow network access") from e


def resolve_lora(adapter_dir: str | Path, cache_dir: str | Path, *, base: ModelRef | None = None) -> Path:
    """Merge a LoRA adapter into a float32 copy of its base model (``base``, else the adapter's
    ``base_model_name_or_path``), cached in ``cache_dir`` under a key of the adapter's files and the base; returns
    that folder. The base is reloaded in full precision even after QLoRA: merging into 4-bit weights loses the
    precision the merge needs."""
    adapter_dir = Path(adapter_dir)
    if base is None:
        named = str(read_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path") or "")
        if not named:
            raise MergeError(f"{adapter_dir}: adapter_config.json names no base_model_name_or_path; pass base=")
        base = ModelRef(str(adapter_dir / named) if not Path(named).is_dir() and (adapter_dir / named).is_dir()
                        else named)
    base_dir = local_model_dir(base)
    base_config = read_json(base_dir / "config.json") if (base_dir / "config.json").is_file() else {}
    if base_config.get("quantization_config"):
        raise MergeError(f"the base model {base.ref!r} of adapter {adapter_dir} is a quantized checkpoint; merge the "
                         "adapter into a bfloat16/float32 copy of the original weights, never into 4-bit weights")
    require_safetensors(base_dir)
    digest = hashlib.sha256(f"{base.ref}@{base.revision}".encode())
    for f in sorted(adapter_dir.iterdir()):
        if f.is_file() and f.name.startswith(("adapter_", "tokenizer")):
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    out = Path(cache_dir) / f"{adapter_dir.name}-merged-{digest.hexdigest()[:12]}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out

    from medslm.models import merge_lora_adapter

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    merge_lora_adapter(base_dir, adapter_dir, tmp, device="cpu", trust_remote_code=base.trust_remote_code)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def resolve_parent(role: str, ref: ModelRef, cache_dir: str | Path, *, adapter_base: ModelRef | None = None) -> Parent:
    """One parent as a local full-precision safetensors folder (an adapter merged into its base first)."""
    path = local_model_dir(ref)
    if is_lora_adapter(path):
        path = resolve_lora(path, cache_dir, base=adapter_base)
    if not (path / "config.json").is_file():
        raise MergeError(f"{role} model {ref.ref}: {path} has no config.json (not a Hugging Face model folder)")
    return Parent(role, ref, require_safetensors(path))


def resolve_parents(params: MergeParams, run: RunDir, cache_dir: str | Path) -> list[Parent]:
    """The parents of 04_merge, each resolved once: the instruct model (``params.instruct``, else the run's base
    model), the CPT model (``params.cpt_model``, else 03_cpt's model, else its adapter) and ``params.experts``."""
    instruct = resolve_model(params.instruct, run.path)
    same_code = instruct.trust_remote_code  # the CPT model and experts share the instruct model's architecture
    cpt_named = params.cpt_model
    if cpt_named is None:
        found = next((d for d in (run.cpt.model, run.cpt.adapter) if d.is_dir()), None)
        if found is None:
            raise MergeError(f"no CPT model: neither {run.cpt.model} nor {run.cpt.adapter} exists; run 03_cpt or set "
                             "cpt_model")
        cpt_named = str(found)
    # the run's own adapter was trained on the run's base model (its adapter_config may name another machine's path)
    run_base = base_model_ref(run.path) if params.cpt_model is None else None
    parents = [resolve_parent("instruct", instruct, cache_dir),
               resolve_parent("cpt", ModelRef(cpt_named, None, same_code), cache_dir, adapter_base=run_base)]
    for i, expert in enumerate(params.experts, start=1):
        parents.append(resolve_parent(f"expert {i}", ModelRef(expert, None, same_code), cache_dir))
    return parents
