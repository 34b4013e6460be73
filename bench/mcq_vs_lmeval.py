"""Seconds to score long-context 4-option multiple choice: lm-evaluation-harness (``lm_eval.simple_evaluate``,
``hf`` model) against medslm's shared-context scorer (``score_mcq``), same items, same model, same batch size,
one run. Also checks that both give the same per-item answers.

Items: the toy world's cloze probes (4 options), each preceded by ``--shots`` solved probes, so contexts run to
several hundred tokens, as k-shot MedQA/MMLU prompts do. Model: a randomly initialised Llama of ``--hidden`` /
``--layers`` with the toy tokenizer, or ``--model DIR`` (a local HF folder). Prints one JSON line per figure:

* ``items`` — items, mean and min context tokens;
* ``lm_eval_s``, ``medslm_s`` — wall seconds of each scorer (lm-eval's includes its task setup, ~1–2 s);
* ``speedup`` — lm_eval_s / medslm_s;
* ``parity`` — max |Δ log-likelihood| and prediction mismatches.

    .venv/bin/python bench/mcq_vs_lmeval.py [--items 100] [--shots 30] [--batch-size 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def build_items(tokenizer, n_items: int, shots: int, seed: int = 0) -> list[dict]:
    from medslm.toyworld.knowledge import load_knowledge
    from medslm.toyworld.probes import cloze_probes

    probes = cloze_probes(load_knowledge(), seed)
    items = []
    for i in range(n_items):
        target = probes[(i * 7) % len(probes)]
        examples = [probes[(i * 7 + 1 + j) % len(probes)] for j in range(shots)]
        solved = "".join(f"{p['context']} {p['choices'][p['gold']]}\n\n" for p in examples)
        items.append({"id": target["id"], "context": solved + target["context"], "choices": target["choices"],
                      "gold": target["gold"]})
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--shots", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on shared CPUs)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--model", type=Path, default=None, help="a local HF model folder instead of the random Llama")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from medslm.evaluate import score_mcq, tok_encode
    from medslm.evaluate.reference import lm_eval_logliks
    from medslm.models import load_model, load_tokenizer, save_model

    work = Path(tempfile.mkdtemp(prefix="mcq_bench_"))
    if args.model is None:
        from medslm.toyworld.knowledge import load_knowledge
        from medslm.toyworld.probes import cloze_probes
        from medslm.toyworld.tinymodel import new_tiny_llama
        from medslm.toyworld.tokenizer import train_tokenizer

        probes = cloze_probes(load_knowledge(), 0)
        tokenizer = train_tokenizer([p["context"] + " " + " ".join(p["choices"]) for p in probes], vocab_size=2048)
        model = new_tiny_llama(tokenizer, seed=0, hidden_size=args.hidden, num_layers=args.layers, num_heads=4,
                               intermediate_size=args.hidden * 3, max_positions=4096)
        model_dir = save_model(model, tokenizer, work / "model")
    else:
        model_dir = args.model
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir, device="cpu")
    items = build_items(tokenizer, args.items, args.shots)
    lengths = [len(tok_encode(tokenizer, it["context"])) for it in items]
    print(json.dumps({"figure": "items", "items": len(items), "choices": 4, "mean_context_tokens":
                      sum(lengths) / len(lengths), "min_context_tokens": min(lengths), "threads": args.threads,
                      "batch_size": args.batch_size, "model": str(args.model or f"random Llama h{args.hidden} "
                                                                                  f"x{args.layers}")}))

    start = time.perf_counter()
    reference = lm_eval_logliks(model_dir, items, work / "lm_eval", batch_size=args.batch_size)
    lm_eval_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = score_mcq(model, tokenizer, items, batch_size=args.batch_size)
    medslm_s = time.perf_counter() - start

    deltas = [abs(a - b) for r, ref in zip(ours, reference, strict=True) for a, b in zip(r.logliks, ref, strict=True)]
    mismatches = sum(r.pred != max(range(len(ref)), key=ref.__getitem__) for r, ref in zip(ours, reference,
                                                                                               strict=True))
    print(json.dumps({"figure": "lm_eval_s", "value": round(lm_eval_s, 3)}))
    print(json.dumps({"figure": "medslm_s", "value": round(medslm_s, 3)}))
    print(json.dumps({"figure": "speedup", "value": round(lm_eval_s / medslm_s, 2)}))
    print(json.dumps({"figure": "parity", "max_abs_delta_loglik": max(deltas), "prediction_mismatches": mismatches}))


if __name__ == "__main__":
    main()
