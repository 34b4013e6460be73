"""The memory rule (medslm.models.training_memory) and the README's profile table printed from it."""

import re
from pathlib import Path

import pytest

from medslm.models import GiB, training_memory
from medslm.params import load_profile
from medslm.sizing import MODEL_PARAMETERS, needs_table, profile_needs

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted((REPO / "params").glob("*.yaml"))


def test_readme_table_is_the_formulas_output():
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- profile-table[^>]*-->\n(.*?)\n<!-- /profile-table -->", readme, re.S)
    assert found, "README.md lacks the profile table markers"
    assert found.group(1) == needs_table(PROFILES), "regenerate it with `python -m medslm.sizing`"


def test_every_profile_with_a_named_model_is_in_the_table():
    table = needs_table(PROFILES)
    for path in PROFILES:
        prof = load_profile(path)
        model = getattr(prof.steps.get("prepare"), "base_model", None)
        assert (f"`{path.stem}`" in table) == (model in MODEL_PARAMETERS), path.name
    assert "`smoke`" not in table  # the toy model is not a hub model


def test_full_training_bytes_by_hand():
    """full: weights + gradients + two AdamW states in the weights' dtype, sharded; activations 1/4 of the weights."""
    n = 7e9
    bf16 = training_memory(n, "full", "bf16")
    assert (bf16.weights, bf16.gradients, bf16.optimizer, bf16.activations) == (2 * n, 2 * n, 4 * n, 0.5 * n)
    assert training_memory(n, "full", "fp32").total == 16 * n + n
    sharded = training_memory(n, "full", "bf16", gpus=8)
    assert sharded.total == pytest.approx(8 * n / 8 + 0.5 * n)


def test_lora_and_qlora_bytes_by_hand():
    n = 1e9
    lora = training_memory(n, "lora", "bf16")
    trainable = 0.01 * n
    assert lora.total == pytest.approx(2 * n + 16 * trainable + 0.5 * n)
    qlora = training_memory(n, "qlora", "fp16")
    assert qlora.total == pytest.approx(0.55 * n + 16 * trainable + 0.5 * n)
    assert qlora.total < lora.total < training_memory(n, "full", "bf16").total


def test_profile_needs_reads_the_training_steps():
    defined = profile_needs(load_profile(REPO / "params" / "defined-qwen7b.yaml"))
    assert (defined.step, defined.mode, defined.precision, defined.gpus) == ("cpt", "full", "bf16", 8)
    assert defined.gib_per_device == pytest.approx(training_memory(7.62e9, "full", "bf16", 8).total / GiB)
    laptop = profile_needs(load_profile(REPO / "params" / "laptop.yaml"))
    assert laptop.gpus == 0 and laptop.precision == "fp32"  # a CPU profile: RAM, fp32


@pytest.mark.parametrize("args", [(1e9, "half", "bf16"), (1e9, "full", "int8"), (1e9, "full", "bf16", 0)])
def test_bad_arguments_name_what_is_allowed(args):
    with pytest.raises(ValueError, match="not one of|at least 1"):
        training_memory(*args)
