"""Run 04_merge from a profile outside a notebook, through the same recipe the notebook calls::

    python -m medslm.merge params/smoke.yaml [--run-dir outputs/smoke]
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medslm.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="parameter profile (YAML)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: the profile's run.output_dir)")
    args = parser.parse_args(argv)

    from medslm.merge.recipe import MergeRecipe
    from medslm.notebook import seed_everything
    from medslm.params import MergeParams, ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as e:
        print(e, file=sys.stderr)
        return 2
    seed_everything(profile.run.seed)
    recipe = MergeRecipe(profile.steps.get("merge") or MergeParams(), args.run_dir or profile.run_dir(),
                         device=profile.run.device, seed=profile.run.seed)
    metrics = recipe.run_all()
    selection = metrics["selection"]
    print(json.dumps({"selected": selection["selected"], "fallback": selection["fallback"], "note": selection["note"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
