"""Does merging beat mixing the parents' scores? The papers' alternatives against the chord, toy world.

In the (general, medical) plane the straight line between the instruct model (t = 0) and the CPT model (t = 1) is
what interpolating their *scores* would give; a merge earns its keep only where it lies above that line
(:func:`medslm.merge.selection.chord_gaps`: the merge's medical score minus the line's at the merge's general
score). This bench runs, on a copy of a smoke run's 00–02 per variant, the whole 03_cpt step and then 04_merge's
SLERP sweep for

* ``default`` — the smoke CPT (full fine-tuning, learning rate 3e-3);
* ``lr_1e-3`` — a lower CPT learning rate (the papers continue pre-training gently);
* ``lora`` — LoRA CPT (the adapter is merged into a full model before the merge);

and, on the default CPT model, TIES against the instruct model as base (``method: ties``, density 0.9, not
normalised: with one task vector, normalising divides the weight out) at CPT weights 0.5, 0.7 and 0.9. Prints one JSON line per merge: variant, method, t or weight, the three probe scores and
the chord gaps against general and chat.

    .venv/bin/python bench/merge_chord.py [--run outputs/smoke] [--variants default,lr_1e-3,lora] [--ties 0.5,0.7,0.9]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from cpt_replay import REPO, ensure_upstream

VARIANTS = {"default": {}, "lr_1e-3": {"learning_rate": 1e-3}, "lora": {"mode": "lora"}}


def scratch_run(run: Path, scratch: Path, name: str) -> Path:
    """A fresh run folder holding copies of ``run``'s 00_prepare and 02_classify."""
    from medslm.rundir import RunDir

    src, dst = RunDir(run), RunDir(scratch / name)
    for step in (src.prepare, src.classify):
        shutil.copytree(step.path, dst.path / step.path.name)
    return dst.path


def merge_points(run: Path, **merge_params) -> tuple[list, dict]:
    """04_merge on ``run`` with ``merge_params`` over the defaults: (the measured points, the chord gaps)."""
    from medslm.merge.recipe import MergeRecipe
    from medslm.merge.selection import chord_gaps
    from medslm.params import MergeParams

    recipe = MergeRecipe(MergeParams(**merge_params), run, device="cpu", seed=0, progress=False)
    recipe.setup()
    recipe.merge()
    points = recipe.evaluate()
    return points, {x: chord_gaps(points, x, "medical") for x in ("general", "chat")}


def report(variant: str, method: str, knob: str, value: float, point, chords: dict) -> None:
    label = f"{point.t:g}"
    print(json.dumps({"variant": variant, "method": method, knob: value,
                      **{k: round(point.scores[k], 4) for k in ("medical", "general", "chat")},
                      "chord_gap_general": round(chords["general"][label], 4),
                      "chord_gap_chat": round(chords["chat"][label], 4)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "outputs" / "smoke")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--ties", default="0.5,0.7,0.9", help="CPT weights of the TIES merges ('' = none)")
    args = parser.parse_args()
    from medslm.cpt import CptRecipe
    from medslm.params import CptParams, RunParams

    ensure_upstream(args.run)
    with tempfile.TemporaryDirectory(prefix="medslm-chord-") as scratch:
        for variant in args.variants.split(","):
            run = scratch_run(args.run, Path(scratch), variant)
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer's log lines: stdout keeps the JSON figures
                CptRecipe(CptParams(**VARIANTS[variant]), run, RunParams(device="cpu", seed=0)).run()
                points, chords = merge_points(run)
            for parent in (p for p in points if not p.merged):
                print(json.dumps({"variant": variant, "parent": parent.label, "t": parent.t,
                                  **{k: round(parent.scores[k], 4) for k in ("medical", "general", "chat")}}))
            for point in (p for p in points if p.merged):
                report(variant, "slerp", "t", point.t, point, chords)
            if variant != "default" or not args.ties:
                continue
            for weight in (float(w) for w in args.ties.split(",")):
                with contextlib.redirect_stdout(sys.stderr):
                    points, chords = merge_points(run, method="ties", weights=[weight], density=0.9, normalize=False)
                for point in (p for p in points if p.merged):
                    report(variant, "ties", "weight", weight, point, chords)


if __name__ == "__main__":
    main()
