"""How much memory a mergekit merge needs, and whether it fits (fitted by bench/merge_memory.py)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medslm.merge.configs import DTYPES, TASK_VECTOR_METHODS, MergeError
from medslm.merge.parents import require_safetensors

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Peak RSS of a fresh Python process after `import torch, transformers, mergekit` on the development machine
# (CPU torch 2.13, transformers 5.23, mergekit 0.1.5): 442 MiB measured (bench/merge_memory.py prints it).
IMPORT_OVERHEAD_BYTES = 450 * 2**20
# Shard sizes tried (largest first) when out_shard_size is not given; mergekit's default is 5B (bytes per shard).
SHARD_CANDIDATES = (5_000_000_000, 2_000_000_000, 1_000_000_000, 500_000_000, 200_000_000, 100_000_000)


class MergeMemoryError(MemoryError):
    """The merge is estimated not to fit in the available memory; ``estimate`` holds the figures."""

    def __init__(self, message: str, estimate: dict[str, Any]):
        super().__init__(message)
        self.estimate = estimate


def safetensors_summary(model_dir: str | Path) -> dict[str, int]:
    """Bytes, parameter count and largest tensor (elements) of a model folder, from its safetensors headers
    (no tensor is read; a folder without safetensors is refused)."""
    model_dir = require_safetensors(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    total = params = largest = 0
    for f in files:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            numel = math.prod(info["shape"]) if info["shape"] else 1
            start, end = info["data_offsets"]
            total += end - start
            params += numel
            largest = max(largest, numel)
    return {"bytes": total, "params": params, "largest_tensor": largest}


def parse_size(value: int | str) -> int:
    """``500M`` → 500_000_000 (K, M, B suffixes as in mergekit's --out-shard-size)."""
    if isinstance(value, int):
        return value
    s = str(value).strip()
    mult = {"K": 10**3, "M": 10**6, "B": 10**9}.get(s[-1:].upper())
    return int(s[:-1]) * mult if mult else int(s)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def estimate_merge_memory(
    model_dirs: Sequence[str | Path],
    *,
    dtype: str = "float32",
    method: str = "slerp",
    out_shard_size: int | str | None = None,
    device: str = "cpu",
    available_bytes: int | None = None,
    available_vram_bytes: int | None = None,
    overhead_bytes: int = IMPORT_OVERHEAD_BYTES,
) -> dict[str, Any]:
    """Peak RAM of a mergekit merge of ``model_dirs`` (all inputs, base included), and whether it fits.

    Model (fitted on this machine, see bench/merge_memory.py)::

        needed = import overhead + Σ input model bytes (safetensors are memory-mapped and every page is read)
                 + one output shard (mergekit holds a shard in RAM until it writes it)
                 + (inputs + 1) × the largest tensor in float32 (the arithmetic of one tensor;
                   + 2 more for the task-vector methods, which stack deltas and sign masks)

    For two inputs and one shard this is ≈ overhead + 3 × one model. Without ``out_shard_size`` the largest shard
    size (5B … 100M bytes) that fits is chosen. ``available_bytes`` defaults to psutil's available RAM, VRAM to
    torch.cuda.mem_get_info (only checked for ``device='cuda'``). Returns bytes per term, ``fits`` and a summary.
    """
    if dtype not in DTYPES:
        raise MergeError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    dirs = list(dict.fromkeys(str(d) for d in model_dirs))
    sums = [safetensors_summary(d) for d in dirs]
    inputs = sum(s["bytes"] for s in sums)
    params = max(s["params"] for s in sums)
    largest = max(s["largest_tensor"] for s in sums)
    output = params * _DTYPE_BYTES[dtype]
    working = (len(dirs) + 1 + (2 if method in TASK_VECTOR_METHODS else 0)) * largest * 4
    if available_bytes is None:
        import psutil

        available_bytes = int(psutil.virtual_memory().available)

    def need(shard: int) -> int:
        return overhead_bytes + inputs + min(shard, output) + working

    if out_shard_size is not None:
        shard = parse_size(out_shard_size)
    else:
        shard = next((s for s in SHARD_CANDIDATES if need(s) <= available_bytes), SHARD_CANDIDATES[-1])
    needed = need(shard)
    est: dict[str, Any] = {
        "models": dirs,
        "model_bytes": [s["bytes"] for s in sums],
        "overhead_bytes": overhead_bytes,
        "inputs_bytes": inputs,
        "output_bytes": output,
        "shard_bytes": min(shard, output),
        "working_bytes": working,
        "needed_bytes": needed,
        "available_bytes": available_bytes,
        "out_shard_size": shard,
        "device": device,
        "fits_ram": needed <= available_bytes,
    }
    fits = est["fits_ram"]
    if device.startswith("cuda"):
        if available_vram_bytes is None:
            import torch

            available_vram_bytes = int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else 0
        vram = working
        est.update(vram_needed_bytes=vram, vram_available_bytes=available_vram_bytes,
                   fits_vram=vram <= available_vram_bytes)
        fits = fits and est["fits_vram"]
    est["fits"] = fits
    est["summary"] = (
        f"merge of {len(dirs)} models needs ≈ {_gib(needed)} RAM (imports {_gib(overhead_bytes)} + inputs "
        f"{_gib(inputs)} + output shard {_gib(est['shard_bytes'])} + working {_gib(working)}); available "
        f"{_gib(available_bytes)}; out_shard_size {shard:,} bytes"
        + (f"; VRAM {_gib(est['vram_needed_bytes'])} of {_gib(available_vram_bytes)}" if "fits_vram" in est else "")
        + ("" if fits else " → does NOT fit")
    )
    return est


def check_memory(estimate: Mapping[str, Any]) -> None:
    """Raise :class:`MergeMemoryError` (needed vs available, and what to try) when the estimate does not fit."""
    if estimate["fits"]:
        return
    lines = []
    if not estimate["fits_ram"]:
        lines.append(f"the merge needs about {_gib(estimate['needed_bytes'])} of RAM but only "
                     f"{_gib(estimate['available_bytes'])} is available (imports {_gib(estimate['overhead_bytes'])}, "
                     f"input models {_gib(estimate['inputs_bytes'])}, output shard {_gib(estimate['shard_bytes'])}, "
                     f"working tensors {_gib(estimate['working_bytes'])})")
    if estimate.get("fits_vram") is False:
        lines.append(f"the GPU needs about {_gib(estimate['vram_needed_bytes'])} but has "
                     f"{_gib(estimate['vram_available_bytes'])} free")
    tips = ("smaller output shards (out_shard_size: 200M), dtype: bfloat16 (half the output), closing other models "
            "in this kernel, or a machine with more memory")
    raise MergeMemoryError("; ".join(lines) + f". Try: {tips}.", dict(estimate))
