"""Running one mergekit merge (``run_merge`` with ``MergeOptions``) into a folder, checked first and written
atomically; and the stages of a multi-stage recipe."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mergekit.config import MergeConfiguration

from medslm.merge.compat import check_compatible
from medslm.merge.configs import MergeError, Stage, config_models, tokenizer_source
from medslm.merge.memory import check_memory, estimate_merge_memory
from medslm.merge.parents import is_lora_adapter, require_safetensors
from medslm.rundir import write_text

MODEL_CARD = """---
library_name: transformers
tags:
- mergekit
- merge
---
# {name}

A merge of pre-trained language models made with [mergekit](https://github.com/arcee-ai/mergekit) by medslm.

### Configuration

```yaml
{config_yaml}
```
"""


def check_inputs(config: MergeConfiguration) -> list[str]:
    """The local model folders of ``config``, each a resolved full model with safetensors weights (LoRA adapters
    and pickled checkpoints are refused here, before mergekit reads anything)."""
    if config.base_model is None:
        raise MergeError("set base_model: without it mergekit's output config depends on the order of a hash set")
    models = config_models(config)
    for model in models:
        if not Path(model).is_dir():
            raise MergeError(f"{model} is not a local folder: resolve hub models first (medslm.merge.resolve_parent)")
        if is_lora_adapter(model):
            raise MergeError(f"{model} is a LoRA adapter: resolve it first (medslm.merge.resolve_parent merges it "
                             "into a full-precision copy of its base, once)")
        require_safetensors(model)
    return models


def run_mergekit(config: MergeConfiguration, out_dir: str | Path, *, seed: int = 0, device: str = "cpu",
                 out_shard_size: int | str | None = None, check: bool = True, memory_check: bool = True,
                 available_bytes: int | None = None, trust_remote_code: bool = False) -> Path:
    """Run one mergekit merge into ``out_dir`` (replaced atomically) and return it.

    Before merging: the inputs are checked (:func:`check_inputs`), compared (:func:`check_compatible`) and the
    memory estimated (:func:`estimate_merge_memory`; refused when it does not fit). ``seed`` is mergekit's
    random_seed (dare_ties, della). The folder holds the safetensors weights, config, tokenizer,
    ``mergekit_config.yml`` and a README model card.
    """
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from medslm.models import resolve_device

    out_dir = Path(out_dir)
    device = resolve_device(device)
    models = check_inputs(config)
    if check:
        check_compatible(models, tokenizer_source=tokenizer_source(config))
    estimate = estimate_merge_memory(models, dtype=config.dtype or "float32", method=config.merge_method,
                                     out_shard_size=out_shard_size, device=device, available_bytes=available_bytes)
    if memory_check:
        check_memory(estimate)
    options = MergeOptions(random_seed=seed, out_shard_size=estimate["out_shard_size"], device=device,
                           cuda=device.startswith("cuda"), trust_remote_code=trust_remote_code, copy_tokenizer=True,
                           write_model_card=True, safe_serialization=True, quiet=True)
    # mergekit caches tensor loaders per model path for the whole process; a path re-written by an earlier merge
    # (a recipe stage, a sweep point) would be read through a stale index. Start each merge fresh.
    LoaderCache().loaders.clear()
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The config as given (mergekit rewrites `models` into `modules/slices` while planning): this YAML goes into
        # mergekit_config.yml and the README card, and a re-run with the same config can reuse the folder.
        yml = config.to_yaml()
        run_merge(config.model_copy(deep=True), str(tmp), options=options, config_source=yml)
        if not (tmp / "mergekit_config.yml").is_file():
            write_text(tmp / "mergekit_config.yml", yml)
        if not (tmp / "README.md").is_file():
            write_text(tmp / "README.md", MODEL_CARD.format(name=out_dir.name, config_yaml=yml))
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        LoaderCache().loaders.clear()
    return out_dir


def same_merge(out_dir: str | Path, config: MergeConfiguration) -> bool:
    """Whether ``out_dir`` holds a finished merge of exactly ``config`` (so a sweep or recipe can resume)."""
    out_dir = Path(out_dir)
    f = out_dir / "mergekit_config.yml"
    if not f.is_file() or not (out_dir / "config.json").is_file():
        return False
    return f.read_text(encoding="utf-8") == config.to_yaml()


def merge_once(config: MergeConfiguration, out_dir: str | Path, **options: Any) -> Path:
    """:func:`run_mergekit`, unless ``out_dir`` already holds this exact merge."""
    return Path(out_dir) if same_merge(out_dir, config) else run_mergekit(config, out_dir, **options)


def run_stages(stages: Sequence[Stage], **options: Any) -> Path:
    """Run the stages of a multi-stage recipe in order (each reused when finished); returns the last folder."""
    if not stages:
        raise MergeError("a recipe needs at least one stage")
    for stage in stages:
        out = merge_once(stage.config, stage.out, **options)
    return out
