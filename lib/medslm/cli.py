"""The ``medslm`` command: ``run``, ``validate``, ``show``, ``steps``, ``cells``, ``report`` and ``init``."""

from __future__ import annotations

import argparse
import sys

from medslm.params import STEP_DIRS, STEP_ORDER, STEP_PARAMS, ProfileError, load_profile


def _split(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medslm", description="Run the medslm recipe notebooks from a profile.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="validate a profile, then run its steps with papermill")
    run.add_argument("profile", help="profile YAML, e.g. params/smoke.yaml")
    run.add_argument("--steps", help="comma-separated steps to run (default: all steps of the profile)")
    run.add_argument("--from", dest="from_step", help="run this step and the ones after it")
    run.add_argument("--force", action="store_true",
                     help="run steps even when unchanged, and write into a non-empty folder that is not a run")
    val = sub.add_parser("validate", help="validate a profile and report every problem")
    val.add_argument("profile")
    show = sub.add_parser("show", help="print every resolved value of a profile (defaults included)")
    show.add_argument("profile")
    sub.add_parser("steps", help="list the recipe's steps and their notebooks")
    figures = sub.add_parser("figures", help="the README's figure table, generated from a run's metrics")
    figures.add_argument("run_dir")
    figures.add_argument("--write", metavar="README", help="replace the figure block of this README")
    cells = sub.add_parser("cells", help="regenerate the notebooks' parameters cells from medslm.params")
    cells.add_argument("--check", action="store_true", help="only report notebooks whose cell is out of date")
    report = sub.add_parser("report", help="write RUN_DIR/report.html from the run's metrics, figures and manifest")
    report.add_argument("run_dir", help="a run directory, e.g. outputs/smoke")
    init = sub.add_parser("init", help="copy the notebooks and profiles into DIR to edit and run them there")
    init.add_argument("dir", help="folder to create (gets notebooks/, params/ and outputs/)")
    init.add_argument("--force", action="store_true", help="overwrite notebooks/ and params/ that exist in DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "steps":
            for name in STEP_ORDER:
                state = "ready" if name in STEP_PARAMS else "planned"
                print(f"{name:17s} notebooks/{STEP_DIRS[name]}.ipynb  [{state}]")
            return 0
        if args.command == "show":
            print(load_profile(args.profile).describe())
            return 0
        if args.command == "figures":
            from medslm.figures import figure_table, write_readme

            if args.write:
                write_readme(args.write, args.run_dir)
            print(figure_table(args.run_dir))
            return 0
        if args.command == "cells":
            from medslm.notebook import sync_install_cells, sync_parameters_cells
            from medslm.runner import NOTEBOOKS_DIR

            changed = []
            for kind, sync in (("parameters", sync_parameters_cells), ("install", sync_install_cells)):
                for path in sync(NOTEBOOKS_DIR, check=args.check):
                    changed.append(path)
                    print(f"{path}: {kind} cell {'out of date' if args.check else 'rewritten'}")
            return 1 if args.check and changed else 0
        if args.command == "report":
            from medslm.report import write_report

            print(f"report: {write_report(args.run_dir)}")
            return 0
        if args.command == "init":
            from medslm.resources import init_project

            try:
                folders = init_project(args.dir, overwrite=args.force)
            except FileExistsError as e:
                print(f"medslm: {e}", file=sys.stderr)
                return 2
            print("copied " + ", ".join(str(f) for f in folders) + f"; run e.g. `medslm run {folders[1]}/smoke.yaml`")
            return 0
        if args.command == "validate":
            prof = load_profile(args.profile)
            print(f"{args.profile}: valid; run {prof.run.name!r} → {prof.run_dir()}; steps: {', '.join(prof.step_names())}")
            return 0
        return run_command(args)
    except ProfileError as e:
        print(f"medslm: {e}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    """``medslm run``: 0 when every step is done or unchanged, 1 when one failed or cannot run, 130 on Ctrl-C."""
    from medslm.rundir import RunDirError
    from medslm.runner import RunInterrupted, StepFailed, UpstreamNotReady, run_profile

    try:
        run_dir = run_profile(args.profile, steps=_split(args.steps), from_step=args.from_step, force=args.force)
    except (StepFailed, UpstreamNotReady, RunDirError) as e:
        print(f"medslm: {e}", file=sys.stderr)
        return 1
    except RunInterrupted as e:
        print(f"medslm: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C outside a step (validation, lock): nothing to mark
        print("medslm: interrupted", file=sys.stderr)
        return 130
    print(f"run directory: {run_dir}\nreport: {run_dir / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
