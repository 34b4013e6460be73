"""06_align's SFT at several batch sizes (same examples, same epoch, so more steps for smaller batches), scored on
held-out examples that 06's quick checks do not read.

Each batch size trains the start model of a finished run (04_merge's selected merge) on that run's 05_synthesize
examples with the run's other align defaults, in a scratch run folder (the run itself is not touched). The score
rows are a seeded sample of 05's SFT test split *without* the rows of 06's check sample, so a batch size chosen by
the check figures is confirmed on other rows. Prints one JSON line per batch size: held-out task score (mean over
tasks), JSON validity, SFT wall time and steps.

    .venv/bin/python bench/sft_batch.py [--run outputs/smoke] [--batch-sizes 8 2] [--rows 240] [--set max_length=1024]

``--set KEY=VALUE`` (repeatable) changes any other align parameter for every batch size, e.g. ``max_length``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def scratch_run(run: Path, folder: Path) -> Path:
    """A run folder whose 00_prepare, 04_merge and 05_synthesize are links to ``run``'s (06_align is written anew)."""
    from medslm.rundir import RunDir

    source, scratch = RunDir(run), RunDir(folder)
    for step in ("prepare", "merge", "synthesize"):
        scratch.step(step).path.symlink_to(source.step(step).path, target_is_directory=True)
    return folder


def confirmation_rows(recipe, n: int, seed: int) -> list[dict]:
    """``n`` rows of the SFT test split outside the quick checks' sample (seeded)."""
    from medslm.align.checks import sample_rows

    checked = {row["id"] for row in recipe.check_rows()}
    return sample_rows([row for row in recipe.rows["sft_test"] if row["id"] not in checked], n, seed, "confirm")


def sft_at(run: Path, batch_size: int, rows: int, seed: int, settings: dict | None = None) -> dict:
    """Train SFT at ``batch_size`` in a scratch copy of ``run``; score it on the confirmation rows."""
    from medslm.align.checks import answer, summarize
    from medslm.align.recipe import AlignRecipe
    from medslm.params import AlignParams, RunParams
    from medslm.rundir import read_json

    params = AlignParams(**{**(settings or {}), "stages": "sft_only", "sft_batch_size": batch_size, "save_steps": 0,
                            "projection_batches": 0})
    with tempfile.TemporaryDirectory() as tmp:
        recipe = AlignRecipe(params, scratch_run(run, Path(tmp)), RunParams(device="cpu", seed=seed))
        recipe.setup()
        start = time.perf_counter()
        trainer = recipe.sft_trainer()
        summary = recipe.train("sft", trainer)
        seconds = time.perf_counter() - start
        model = recipe.save("sft", trainer)
        held = confirmation_rows(recipe, rows, seed)
        schemas = read_json(recipe.run_dir.synthesize.schemas)
        scores = summarize(held, answer(model, held, "cpu", params.max_new_tokens), schemas, ["de", "en"])
    return {"figure": "sft_heldout", "batch_size": batch_size, **(settings or {}), "steps": summary["global_step"],
            "task_score": round(scores["task_score"], 3), "json_validity": round(scores["json_validity"] or 0, 3),
            "rows": len(held), "sft_seconds": round(seconds, 1),
            "tasks": {task: round(value, 2) for task, value in scores["tasks"].items()}}


def parse_settings(pairs: list[str]) -> dict:
    """``["max_length=1024"]`` → ``{"max_length": 1024}`` (values read as YAML); AlignParams checks names and values."""
    import yaml

    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. max_length=1024")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("outputs/smoke"), help="a run with 04_merge and 05_synthesize")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 2])
    parser.add_argument("--rows", type=int, default=240, help="held-out rows scored (outside 06's check sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another align parameter for every batch size (YAML value), e.g. max_length=1024")
    args = parser.parse_args()
    settings = parse_settings(args.set)
    for batch_size in args.batch_sizes:
        print(json.dumps(sft_at(args.run.resolve(), batch_size, args.rows, args.seed, settings)), flush=True)


if __name__ == "__main__":
    main()
