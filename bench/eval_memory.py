"""Peak memory of 03_cpt's evaluation on a real 135 M model (issue: the real path, target ≤ 2 GB).

Loads SmolLM2-135M-Instruct (the local folder `make smollm2` writes) in a fresh subprocess and measures held-out
perplexity on ``--texts`` documents of ``--tokens`` tokens in batches of 16, as 03_cpt does, with the loss computed in
chunks. Reads the child's peak RSS (VmHWM). Prints one JSON line per figure. Run:
``.venv/bin/python bench/eval_memory.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, time
from medslm.evaluate import perplexity
from medslm.models import load_model, load_tokenizer
folder, n_texts, n_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tokenizer, model = load_tokenizer(folder), load_model(folder, device="cpu")
words = "Der Patient erhielt Metformin gegen Diabetes mellitus Typ 2 und wird morgen entlassen .".split()
texts = [" ".join(words[(i + k) % len(words)] for k in range(n_tokens)) for i in range(n_texts)]
start = time.perf_counter()
value = perplexity(model, tokenizer, texts, batch_size=16, max_length=n_tokens)
seconds = time.perf_counter() - start
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"perplexity": value, "seconds": seconds, "peak_rss_mib": peak / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "outputs" / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=512)
    args = parser.parse_args()
    if not (Path(args.model) / "config.json").is_file():
        sys.exit(f"{args.model}: no model folder; run `make smollm2` first")
    proc = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.texts), str(args.tokens)],
                          capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("peak_rss_mib", "seconds"):
        print(json.dumps({"figure": f"eval_{name}", "value": round(result[name], 1), "texts": args.texts,
                          "tokens": args.tokens, "batch_size": 16, "target_peak_rss_mib": 2048}))


if __name__ == "__main__":
    main()
