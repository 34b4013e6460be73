"""Run 03_cpt from a profile outside a notebook — one process, or several under ``accelerate launch``::

    python -m medslm.cpt_launch params/smoke.yaml
    accelerate launch --config_file params/accelerate/fsdp_8gpu.yaml --num_processes 8 \\
        -m medslm.cpt_launch params/defined-qwen7b.yaml

(:func:`medslm.cpt.launch_command` builds the second line.) It uses the same :mod:`medslm.cpt` functions as the
notebook: the profile's ``cpt`` section (defaults when absent), its run directory, device and seed. The main process
writes ``03_cpt/metrics.json``; every process trains.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medslm.cpt_launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="parameter profile (YAML)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: the profile's run.output_dir)")
    parser.add_argument("--no-eval", action="store_true", help="skip the before/after evaluation")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from medslm import cpt
    from medslm.params import CptParams, ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as e:
        print(e, file=sys.stderr)
        return 2
    params = profile.steps.get("cpt") or CptParams()
    run_dir = args.run_dir or profile.run_dir()
    metrics = cpt.run_step(params, run_dir, device=profile.run.device, seed=profile.run.seed,
                           evaluate=not args.no_eval)
    if cpt.is_main_process():
        summary = {"model_dir": metrics.get("model_dir"), "global_step": metrics["training"]["global_step"],
                   "processes": metrics.get("processes"), "forgetting": metrics.get("forgetting")}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
