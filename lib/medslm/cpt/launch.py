"""Processes and the launch command: one process in a notebook, several under ``accelerate launch`` (FSDP/DDP).

``python -m medslm.cpt.launch PROFILE`` runs 03_cpt's recipe (:class:`medslm.cpt.recipe.CptRecipe`) outside a
notebook, the same code path the notebook calls cell by cell; under ``accelerate launch`` every process trains and
the main process writes the files::

    accelerate launch --config_file params/accelerate/fsdp_8gpu.yaml --num_processes 8 \\
        -m medslm.cpt.launch my-profile.yaml

(:func:`launch_command` builds that line; ``params/accelerate/`` holds the FSDP configs.)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from medslm.resources import accelerate_dir

ACCELERATE_DIR = accelerate_dir()  # the checkout's params/accelerate, else the packaged copy
LAUNCH_MODULE = "medslm.cpt.launch"


def world_size() -> int:
    """Number of training processes (``WORLD_SIZE`` set by accelerate launch / torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the process that writes files and evaluates (rank 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def accelerate_config_path(config: str | Path, root: str | Path | None = None) -> Path:
    """An accelerate config file: a path, or a name in ``params/accelerate/`` (``fsdp_2gpu`` → fsdp_2gpu.yaml)."""
    p = Path(config).expanduser()
    if p.suffix in (".yaml", ".yml", ".json") and p.is_file():
        return p.resolve()
    folder = Path(root) / "params" / "accelerate" if root is not None else ACCELERATE_DIR
    for cand in (folder / config, folder / f"{config}.yaml", folder / f"{config}.yml"):
        if cand.is_file():
            return cand.resolve()
    known = sorted(f.stem for f in folder.glob("*.yaml")) if folder.is_dir() else []
    raise FileNotFoundError(f"accelerate config {str(config)!r} not found; known in {folder}: {known}")


def launch_command(profile_path: str | Path, config_file: str | Path | None = None, num_processes: int = 2,
                   run_dir: str | Path | None = None, accelerate: str = "accelerate") -> list[str]:
    """``accelerate launch --config_file CFG --num_processes N -m medslm.cpt.launch PROFILE`` as an argument list
    (``shlex.join`` it to show it). Without a config file several processes use plain DDP (``--multi_gpu``)."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    cmd = [accelerate, "launch"]
    if config_file is not None:
        cmd += ["--config_file", str(accelerate_config_path(config_file))]
    elif num_processes > 1:
        cmd += ["--multi_gpu"]
    cmd += ["--num_processes", str(num_processes), "-m", LAUNCH_MODULE, str(Path(profile_path).resolve())]
    if run_dir is not None:
        cmd += ["--run-dir", str(Path(run_dir).resolve())]
    return cmd


def format_command(cmd: Sequence[str]) -> str:
    """A launch command as one shell line."""
    return shlex.join(cmd)


def python_accelerate() -> str:
    """The ``accelerate`` executable next to this Python (the venv's), else ``accelerate`` from PATH."""
    cand = Path(sys.executable).with_name("accelerate")
    return str(cand) if cand.exists() else "accelerate"




# --------------------------------------------------------------------------------------------------------------
# python -m medslm.cpt.launch PROFILE
# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {LAUNCH_MODULE}",
                                     description="Run 03_cpt from a profile (one process or under accelerate launch).")
    parser.add_argument("profile", help="parameter profile (YAML)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: the profile's run.output_dir)")
    parser.add_argument("--train-only", action="store_true",
                        help="set up, train and save, but do not evaluate (what a notebook launches on several GPUs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from medslm.cpt.recipe import CptRecipe
    from medslm.params import CptParams, ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as e:
        print(e, file=sys.stderr)
        return 2
    recipe = CptRecipe(profile.steps.get("cpt") or CptParams(), args.run_dir or profile.run_dir(), profile.run,
                       profile=profile.path)
    if args.train_only:
        recipe.run_training()
    else:
        recipe.run()
    if is_main_process():
        summary = recipe.summary()
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
