"""Predicted vs measured peak RAM of mergekit merges (medslm.merge.memory.estimate_merge_memory).

Builds random Llama models of about 50 MB and 200 MB (float32 safetensors) in a temporary folder, runs each merge
in a fresh subprocess (so imports are counted once, as in a notebook kernel that starts with the merge) and reads
the child's peak RSS (VmHWM; ``ru_maxrss`` would include the parent's peak, which Linux carries across exec). Prints one JSON line per figure; ``ratio`` = predicted / measured
(target: within ±25 %). Run: ``.venv/bin/python bench/merge_memory.py`` (about 1–2 minutes on 2 cores).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {  # name: (hidden, layers, intermediate); vocabulary 8000, untied LM head, float32
    "50MB": (384, 4, 1024),
    "200MB": (768, 6, 2048),
}


def build(path: Path, seed: int, hidden: int, layers: int, inter: int, vocab: int = 8000) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def worker(argv: list[str]) -> None:
    """Child process: import (and merge, unless the mode is 'import'), then print the peak RSS in bytes."""
    import mergekit.merge  # noqa: F401 - the import overhead is part of the figure
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from medslm import merge as mg

    if argv[0] == "merge":
        from mergekit.config import MergeConfiguration

        config = MergeConfiguration.model_validate_json(argv[1])
        shard = None if argv[3] == "auto" else int(argv[3])
        mg.run_mergekit(config, argv[2], out_shard_size=shard, memory_check=False, check=False)
    print(json.dumps({"peak_rss_bytes": peak_rss_bytes()}))


def peak_rss_bytes() -> int:
    """This process's peak RSS. Linux keeps ru_maxrss across fork+exec, so a child started by a big parent would
    report the parent's peak; VmHWM of /proc/self/status belongs to the new address space and starts fresh."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(*args: str) -> int:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_bytes"]


def main() -> None:
    from medslm import merge as mg

    mib = 2**20
    with tempfile.TemporaryDirectory(prefix="merge_memory_") as tmp:
        root = Path(tmp)
        models = {name: [build(root / f"{name}_{s}", s, *dims) for s in range(3)] for name, dims in SIZES.items()}
        overhead = run_child("import")
        print(json.dumps({"figure": "import_overhead_mib", "measured": round(overhead / mib, 1),
                          "constant_in_estimate": round(mg.IMPORT_OVERHEAD_BYTES / mib, 1),
                          "ratio": round(mg.IMPORT_OVERHEAD_BYTES / overhead, 3)}))
        cases = []
        for name, (a, b, c) in models.items():
            cases.append((f"slerp_2x{name}", mg.slerp_config(a, b, 0.5), "auto"))
            cases.append((f"slerp_2x{name}_shard20M", mg.slerp_config(a, b, 0.5), str(20_000_000)))
            cases.append((f"ties_3x{name}", mg.build_config("ties", a, [b, c], density=0.5), "auto"))
        cases.append(("slerp_2x200MB_bf16_out", mg.slerp_config(*models["200MB"][:2], 0.5, dtype="bfloat16"), "auto"))
        for case, config, shard in cases:
            est = mg.estimate_merge_memory(mg.config_models(config), dtype=config.dtype, method=config.merge_method,
                                           out_shard_size=None if shard == "auto" else int(shard),
                                           available_bytes=1 << 40)
            out = root / f"out_{case}"
            measured = run_child("merge", config.model_dump_json(), str(out), shard)
            print(json.dumps({
                "figure": "merge_peak_rss_mib", "case": case,
                "one_model_mib": round(est["model_bytes"][0] / mib, 1),
                "predicted": round(est["needed_bytes"] / mib, 1), "measured": round(measured / mib, 1),
                "ratio": round(est["needed_bytes"] / measured, 3),
                "measured_minus_import_per_model": round((measured - overhead) / est["model_bytes"][0], 2),
                "terms_mib": {k: round(est[k] / mib, 1) for k in
                              ("overhead_bytes", "inputs_bytes", "shard_bytes", "working_bytes")},
            }))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
