"""In-context copying of each model of a finished run: loss on a random token sequence and on its repeat.

A model that copies from its context (induction heads) predicts the repeat almost perfectly; one that does not
predicts it no better than the first copy. The toy world's grounded tasks (extract, de-identify, answer from the
document) need that copying, so this says whether a low 06_align task score is a training matter or the model's.
Prints one JSON line per model: first- and second-copy loss (nats) and the gain (first − second).

    .venv/bin/python bench/copy_probe.py [--run outputs/smoke] [--length 40] [--sequences 16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_models(run: Path) -> dict[str, Path]:
    """The run's model folders that exist: base (00), CPT (03), selected merge (04), SFT and DPO (06)."""
    from medslm.rundir import RunDir

    d = RunDir(run)
    found = {"00 base": d.prepare.model, "03 cpt": d.cpt.model, "04 merge": d.merge.selected,
             "06 sft": d.align.model("sft"), "06 dpo": d.align.model("dpo")}
    return {name: path for name, path in found.items() if (path / "config.json").is_file()}


def main() -> None:
    from medslm.evaluate.copying import copy_loss
    from medslm.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("outputs/smoke"))
    parser.add_argument("--length", type=int, default=40, help="tokens per copy")
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, path in run_models(args.run).items():
        model = load_model(path, device="cpu").eval()
        result = copy_loss(model, model.config.vocab_size, args.length, args.sequences, args.seed)
        print(json.dumps({"figure": "copy_loss", "model": name, **{k: round(v, 2) if isinstance(v, float) else v
                                                                    for k, v in result.as_dict().items()}}), flush=True)


if __name__ == "__main__":
    main()
