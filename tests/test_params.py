"""Parameter models and profile validation: every problem reported at once, with file, step, field and value."""

from pathlib import Path

import pytest

from medslm.cli import main
from medslm.params import (
    STEP_ORDER,
    STEP_PARAMS,
    PrepareParams,
    ProfileError,
    RunParams,
    load_profile,
    parse_profile,
    read_yaml,
)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def test_every_profile_in_params_validates():
    profiles = sorted((REPO / "params").glob("*.yaml"))
    assert {p.name for p in profiles} >= {"smoke.yaml", "colab-t4.yaml"}
    for path in profiles:
        prof = load_profile(path)
        assert prof.steps, path


def test_defaults_are_valid_and_equal_smoke_values():
    prof = load_profile(REPO / "params" / "smoke.yaml")
    for name, params in prof.steps.items():
        assert params == STEP_PARAMS[name](), f"smoke profile step {name} differs from the model defaults"
        assert not params.model_fields_set, f"smoke profile restates {params.model_fields_set} of {name}"


@pytest.mark.parametrize("path", sorted((REPO / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_no_profile_restates_a_default(path):
    assert load_profile(path).restated_defaults() == []


def test_restated_defaults_are_found(tmp_path):
    path = write(tmp_path, "run: {seed: 0, seed_note: 1}\nsteps:\n  cpt: {mode: full, epochs: 2}\n")
    with pytest.raises(ProfileError):
        load_profile(path)
    path = write(tmp_path, "run: {seed: 0, device: cpu}\nsteps:\n  cpt: {mode: full, epochs: 2}\n")
    assert load_profile(path).restated_defaults() == ["run.seed", "steps.cpt.mode"]


def test_cli_show_prints_every_resolved_value(capsys):
    assert main(["show", str(REPO / "params" / "smoke.yaml")]) == 0
    out = capsys.readouterr().out
    for name, model in STEP_PARAMS.items():
        assert f"steps.{name}:" in out
        for field in model.model_fields:
            assert f" {field}: " in out, (name, field)
    assert "  * device: \"cpu\"" in out and "    learning_rate: 0.003" in out


def test_scientific_notation_is_a_float(tmp_path):
    path = write(tmp_path, "run: {seed: 1}\nsteps:\n  prepare:\n    learning_rate: 1e-4\n")
    assert read_yaml(path)["steps"]["prepare"]["learning_rate"] == 1e-4
    assert load_profile(path).steps["prepare"].learning_rate == pytest.approx(1e-4)


def test_numeric_string_is_coerced_for_numbers_only():
    assert PrepareParams(learning_rate="5e-3").learning_rate == pytest.approx(5e-3)
    with pytest.raises(ValueError):
        PrepareParams(learning_rate="fast")


BAD = """\
run:
  name: smoke
  seed: -3
  language: fr
steps:
  prepare:
    n_documents: -5
    vocab_size: many
    colour: blue
  annotatte: {}
"""


def test_all_problems_reported_at_once(tmp_path):
    path = write(tmp_path, BAD)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    problems = exc.value.problems
    text = "\n".join(problems)
    assert all(str(path) in p for p in problems)
    # wrong type
    assert any("step prepare" in p and "'vocab_size'" in p and "'many'" in p for p in problems), text
    # unknown field, with the allowed ones
    assert any("unknown field 'colour'" in p and "n_documents" in p for p in problems), text
    # unknown step, naming the known ones
    assert any("unknown step 'annotatte'" in p and "prepare" in p for p in problems), text
    # bad enum value
    assert any("run" in p and "'language'" in p and "'fr'" in p and "de" in p for p in problems), text
    # negative sizes
    assert any("'n_documents'" in p and "-5" in p and "greater than 0" in p for p in problems), text
    assert any("'seed'" in p and "-3" in p for p in problems), text
    assert len(problems) == 6


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "run:\n  name: x\nsteps: [unclosed\n")
    with pytest.raises(ProfileError, match=r"profile.yaml:\d+"):
        load_profile(path)


def test_not_a_mapping_and_empty_steps(tmp_path):
    with pytest.raises(ProfileError, match="mapping"):
        parse_profile(["a"], "x.yaml")
    with pytest.raises(ProfileError, match="names no step"):
        parse_profile({"run": {}}, "x.yaml")


def test_planned_step_is_reported_as_such():
    with pytest.raises(ProfileError, match="planned but not built"):
        parse_profile({"steps": {"failure_analysis": {}}}, "x.yaml")


def test_steps_are_ordered_like_the_recipe():
    prof = parse_profile({"steps": {name: {} for name in reversed(list(STEP_PARAMS))}}, "x.yaml")
    assert prof.step_names() == [s for s in STEP_ORDER if s in STEP_PARAMS]


def test_run_dir_relative_to_repo():
    prof = load_profile(REPO / "params" / "smoke.yaml")
    assert prof.run_dir() == REPO / "outputs" / "smoke"


def test_params_hash_changes_with_values():
    assert PrepareParams().params_hash() == PrepareParams().params_hash()
    assert PrepareParams().params_hash() != PrepareParams(n_documents=10).params_hash()


def test_every_field_is_documented():
    for model in [RunParams, *STEP_PARAMS.values()]:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_cli_validate_exit_codes(tmp_path, capsys):
    assert main(["validate", str(REPO / "params" / "smoke.yaml")]) == 0
    assert main(["validate", str(write(tmp_path, BAD))]) == 2
    err = capsys.readouterr().err
    assert "unknown step 'annotatte'" in err and "'colour'" in err


def test_cli_run_bad_profile_fails_before_any_notebook(tmp_path, capsys):
    path = write(tmp_path, BAD)
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "outputs").exists()
    assert "invalid profile" in capsys.readouterr().err


def test_cli_steps_lists_all(capsys):
    assert main(["steps"]) == 0
    out = capsys.readouterr().out
    for name in STEP_ORDER:
        assert name in out


def test_a_pasted_api_key_is_not_echoed(tmp_path):
    path = write(tmp_path, "steps:\n  annotate:\n    backend: lexicon\n    api_key_env: sk-live-SECRET123\n")
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert "SECRET123" not in str(exc.value) and "api_key_env" in str(exc.value)
