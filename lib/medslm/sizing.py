"""What a profile needs: GPUs and memory per GPU (or RAM on a CPU) of its largest training step, from
:func:`medslm.models.training_memory`. The README's profile table is this module's output (a test compares them):

    python -m medslm.sizing            # prints the table for params/*.yaml
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from medslm.models import GiB, training_memory
from medslm.params import Profile, load_profile

# Parameter counts of the base models the profiles name (from their model cards; SmolLM2 counted on the converted
# folder: 134,515,008). A profile whose model is not listed here is left out of the table.
MODEL_PARAMETERS: dict[str, float] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": 0.135e9,
    "Qwen/Qwen2.5-1.5B-Instruct": 1.54e9,
    "microsoft/Phi-3.5-mini-instruct": 3.82e9,
    "Qwen/Qwen2.5-7B-Instruct": 7.62e9,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
}


@dataclass(frozen=True)
class ProfileNeeds:
    """What a profile needs: its largest training step (memory per device) and the most GPUs any step uses."""

    profile: str
    model: str
    parameters: float
    step: str
    mode: str
    precision: str
    gpus: int  # 0 = trains on the CPU
    gib_per_device: float


def _precision(stated: str, device: str) -> str:
    """The precision a step trains in: as stated, else fp32 on a CPU and 2 bytes (bf16, or fp16 on a T4) on a GPU."""
    if stated != "auto":
        return stated
    return "fp32" if device == "cpu" else "bf16"


def profile_needs(profile: Profile) -> ProfileNeeds | None:
    """GPUs and memory of the profile's most demanding training step (cpt, align); None when its base model is
    not in :data:`MODEL_PARAMETERS` (the toy world's tiny model fits anywhere)."""
    prepare = profile.steps.get("prepare")
    model = getattr(prepare, "base_model", None) or getattr(profile.steps.get("cpt"), "base", None)
    if model not in MODEL_PARAMETERS:
        return None
    count = MODEL_PARAMETERS[model]
    device = profile.run.device
    candidates = []
    for step in ("cpt", "align"):
        params = profile.steps.get(step)
        if params is None:
            continue
        gpus = getattr(params, "num_processes", 1)
        precision = _precision(params.precision, device)
        memory = training_memory(count, params.mode, precision, gpus=gpus).total
        candidates.append((memory, step, params.mode, precision, 0 if device == "cpu" else gpus))
    if not candidates:
        return None
    memory, step, mode, precision, _ = max(candidates)
    gpus = max(c[4] for c in candidates)  # the most GPUs any step uses; memory is the largest per GPU
    return ProfileNeeds(profile.path.stem, model, count, step, mode, precision, gpus, memory / GiB)


def needs_table(paths: list[Path]) -> str:
    """The README's profile table (Markdown) for the given profile files."""
    lines = ["| profile | base model | parameters | largest training step | GPUs | memory per device (rough) |",
             "|---|---|---|---|---|---|"]
    for path in paths:
        needs = profile_needs(load_profile(path))
        if needs is None:
            continue
        where = f"{needs.gpus}" if needs.gpus else "none (CPU)"
        unit = "GiB per GPU" if needs.gpus else "GiB RAM"
        lines.append(f"| `{needs.profile}` | `{needs.model}` | {needs.parameters / 1e9:.2f} B | {needs.step} "
                     f"({needs.mode}, {needs.precision}) | {where} | {needs.gib_per_device:.1f} {unit} |")
    return "\n".join(lines)


def main() -> int:
    from medslm.resources import recipe_dir

    print(needs_table(sorted(recipe_dir("params").glob("*.yaml"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
