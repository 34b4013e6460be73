"""SFT throughput of 06_align with packed (bfd, padding-free) vs padded batches, through trl's own SFTTrainer.

Same start model (04_merge's selected merge of a finished run), same 05_synthesize examples, same batch size; the
two variants alternate over ``--rounds`` rounds of ``--steps`` optimisation steps each (so a busy machine slows both
alike), and the median of the rounds is printed. Tokens are counted by transformers itself
(``include_num_input_tokens_seen="non_padding"``). Prints one JSON line per figure:

* ``sft_tokens_per_second`` — non-pad tokens trained per second, per variant;
* ``sft_packed_vs_padded`` — the ratio packed / padded.

Caveat on a CPU: trl's padding-free packing separates examples through ``position_ids``, which only flash attention
honours; with PyTorch's SDPA the packed examples attend to each other, so on a CPU packing is a speed figure, not
a recipe (``packing`` stays off in the toy profiles).

    .venv/bin/python bench/align_throughput.py [--run outputs/smoke] [--examples 256] [--steps 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def sft_rate(run_dir: Path, packing: bool, examples: int, steps: int, batch_size: int, seed: int) -> tuple[float, int]:
    """(non-pad tokens per second, tokens) of ``steps`` SFT steps after one warm-up step, with or without packing."""
    from medslm.align.recipe import AlignRecipe
    from medslm.align.trainers import load_policy, sft_trainer
    from medslm.params import AlignParams, RunParams

    params = AlignParams(packing=packing, sft_batch_size=batch_size, sft_max_examples=examples, save_steps=0,
                         logging_steps=1000)
    recipe = AlignRecipe(params, run_dir, RunParams(device="cpu", seed=seed))
    recipe.setup()
    with tempfile.TemporaryDirectory() as tmp:
        config = recipe.sft_config()
        config.output_dir, config.max_steps = tmp, steps + 1
        config.include_num_input_tokens_seen = "non_padding"
        trainer = sft_trainer(load_policy(params, recipe.start, "cpu"), recipe.tokenizer,
                              recipe.dataset("sft_train"), config)
        marks: list[tuple[float, int]] = []

        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                marks.append((time.perf_counter(), state.num_input_tokens_seen))

        trainer.add_callback(Clock())
        trainer.train()
    (t0, n0), (t1, n1) = marks[0], marks[-1]  # from the end of the warm-up step to the end of the last
    return (n1 - n0) / (t1 - t0), n1 - n0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("outputs/smoke"), help="a run with 04_merge and 05_synthesize")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rates: dict[str, list[float]] = {"padded": [], "packed": []}
    for round_ in range(args.rounds):
        for name in rates:
            rate, tokens = sft_rate(args.run, name == "packed", args.examples, args.steps, args.batch_size, round_)
            rates[name].append(rate)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in medians.items():
        print(json.dumps({"figure": "sft_tokens_per_second", "variant": name, "value": round(value, 1),
                          "rounds": [round(v, 1) for v in rates[name]], "batch_size": args.batch_size}))
    print(json.dumps({"figure": "sft_packed_vs_padded", "value": round(medians["packed"] / medians["padded"], 2)}))


if __name__ == "__main__":
    main()
