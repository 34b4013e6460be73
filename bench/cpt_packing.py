"""Packed blocks vs padded per-document batches for continual pre-training, on the toy world's medical documents.

One run, same tiny Llama (smoke sizes), same documents, same batch size. "padded" puts one document per row,
truncated to the block size (as per-document training usually does), padded to the longest row of its batch;
"padded_full" keeps whole documents (no truncation); "packed" concatenates the documents and cuts full blocks
(medslm.training.pack_blocks). Prints one JSON line per figure:

* ``real_token_share`` — non-pad tokens / tokens the model computes on (over the whole epoch);
* ``corpus_tokens_kept`` — share of the corpus' tokens that reach the model;
* ``steps_per_epoch`` — optimisation steps to see the corpus once;
* ``real_tokens_per_second`` — non-pad tokens trained per second (forward + backward + AdamW), median of rounds
  that alternate between the variants (so a busy machine slows all of them alike), and the ratios.

    .venv/bin/python bench/cpt_packing.py [--documents 600] [--steps 8] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch


def toy_medical_texts(n: int, seed: int) -> list[str]:
    """Medical documents of the toy world (its corpus generator), or bilingual stand-ins if it is missing."""
    try:
        from medslm.toyworld.corpus import CorpusSpec, generate_corpus

        docs = generate_corpus(CorpusSpec(n_documents=n * 3, medical_fraction=0.35, seed=seed))
        texts = [d["text"] for d in docs if d.get("kind") == "medical"]
        return texts[:n]
    except ImportError:  # pragma: no cover - the toy world ships with medslm
        rng = random.Random(seed)
        en = ["Metformin is used to treat type 2 diabetes.", "The kidney filters the blood.",
              "HbA1c measures the average blood sugar.", "Asthma causes shortness of breath."]
        de = ["Metformin wird gegen Typ-2-Diabetes eingesetzt.", "Die Niere filtert das Blut.",
              "Der HbA1c-Wert misst den mittleren Blutzucker.", "Asthma verursacht Atemnot."]
        return [" ".join(rng.choice(rng.choice([en, de])) for _ in range(rng.randint(2, 30))) for _ in range(n)]


def padded_batches(ids: list[list[int]], block_size: int, batch_size: int, pad: int, seed: int):
    """One document per row, truncated to ``block_size``, padded to the longest row of its batch."""
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size):
        rows = [ids[i][:block_size] for i in order[start : start + batch_size]]
        width = max(len(r) for r in rows)
        x = torch.full((len(rows), width), pad, dtype=torch.long)
        m = torch.zeros_like(x)
        for k, r in enumerate(rows):
            x[k, : len(r)] = torch.tensor(r)
            m[k, : len(r)] = 1
        batches.append((x, m))
    return batches


def packed_batches(ids: list[list[int]], block_size: int, batch_size: int, pad: int, seed: int):
    from medslm.training import pack_blocks

    blocks, masks = pack_blocks(ids, block_size, pad)
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    return [
        (torch.tensor([blocks[i] for i in order[s : s + batch_size]]),
         torch.tensor([masks[i] for i in order[s : s + batch_size]]))
        for s in range(0, len(order), batch_size)
    ]


def throughput(model_factory, variants: dict[str, list], steps: int, rounds: int = 5) -> dict[str, float]:
    """Non-pad tokens per second of each variant: ``rounds`` rounds of ``steps`` training steps, alternating between
    the variants (one warm-up step each first); the median over rounds."""
    import statistics

    state = {}
    for name, batches in variants.items():
        model = model_factory()
        model.train()
        state[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3), batches)

    def step(name, x, m):
        model, opt, _ = state[name]
        out = model(input_ids=x, attention_mask=m, labels=x.masked_fill(m == 0, -100))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for name in variants:
        step(name, *state[name][2][0])
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, (_, _, batches) in state.items():
            seq = [batches[(r * steps + i) % len(batches)] for i in range(steps)]
            t0 = time.perf_counter()
            for x, m in seq:
                step(name, x, m)
            rates[name].append(sum(int(m.sum()) for _, m in seq) / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--documents", type=int, default=600)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="training steps per variant and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from medslm.toyworld.tinymodel import new_tiny_llama
    from medslm.toyworld.tokenizer import train_tokenizer
    from medslm.training import tokenize_documents

    texts = toy_medical_texts(a.documents, a.seed)
    tok = train_tokenizer(texts, vocab_size=1024)
    ids = tokenize_documents(tok, texts)
    pad = tok.pad_token_id
    n_tokens = sum(len(d) for d in ids)
    packed = packed_batches(ids, a.block_size, a.batch_size, pad, a.seed)
    padded = padded_batches(ids, a.block_size, a.batch_size, pad, a.seed)
    padded_full = padded_batches(ids, max(len(d) for d in ids), a.batch_size, pad, a.seed)

    def stats(batches):
        real = sum(int(m.sum()) for _, m in batches)
        computed = sum(m.numel() for _, m in batches)
        return real, computed

    (p_real, p_comp), (d_real, d_comp), (f_real, f_comp) = stats(packed), stats(padded), stats(padded_full)
    lengths = sorted(len(d) for d in ids)
    print(json.dumps({"figure": "corpus", "documents": len(ids), "tokens": n_tokens,
                      "doc_tokens_median": lengths[len(lengths) // 2], "doc_tokens_max": lengths[-1],
                      "block_size": a.block_size, "batch_size": a.batch_size, "threads": a.threads}))
    print(json.dumps({"figure": "real_token_share", "packed": round(p_real / p_comp, 4),
                      "padded": round(d_real / d_comp, 4), "padded_full": round(f_real / f_comp, 4)}))
    print(json.dumps({"figure": "corpus_tokens_kept", "packed": round(p_real / n_tokens, 4),
                      "padded": round(d_real / n_tokens, 4), "padded_full": round(f_real / n_tokens, 4)}))
    print(json.dumps({"figure": "steps_per_epoch", "packed": len(packed), "padded": len(padded),
                      "padded_full": len(padded_full)}))

    def factory():
        return new_tiny_llama(tok, seed=a.seed, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384)

    tps = throughput(factory, {"packed": packed, "padded": padded, "padded_full": padded_full}, a.steps, a.rounds)
    print(json.dumps({"figure": "real_tokens_per_second", **{k: round(v, 1) for k, v in tps.items()},
                      "packed_over_padded": round(tps["packed"] / tps["padded"], 3),
                      "packed_over_padded_full": round(tps["packed"] / tps["padded_full"], 3)}))


if __name__ == "__main__":
    main()
