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
    for name in load_profile(REPO / "params" / "smoke.yaml").steps:
        model = STEP_PARAMS[name]
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


@pytest.mark.parametrize("section, missing", [
    ("{source: local}", ["local_files (JSONL or Parquet paths)", "base_model"]),
    ("{source: hub, base_model: org/model}", ["hub_dataset"]),
    ("{source: local, local_files: [c.jsonl]}", ["base_model"]),
])
def test_a_real_corpus_without_its_documents_or_base_model_fails_at_load(tmp_path, section, missing):
    """Before, a local corpus without base_model was read (or a hub one streamed) and only then failed in 00's cell."""
    path = write(tmp_path, f"steps:\n  prepare: {section}\n")
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    [problem] = exc.value.problems
    assert problem.startswith(f"{path}: step prepare: source: ") and "(section)" not in problem
    assert all(f"needs {name}" in problem for name in missing) and problem.count("needs") == len(missing)
    assert PrepareParams(source="hub", hub_dataset="d", base_model="m").base_model == "m"


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "run:\n  name: x\nsteps: [unclosed\n")
    with pytest.raises(ProfileError, match=r"profile.yaml:\d+"):
        load_profile(path)


def test_not_a_mapping_and_empty_steps(tmp_path):
    with pytest.raises(ProfileError, match="mapping"):
        parse_profile(["a"], "x.yaml")
    with pytest.raises(ProfileError, match="names no step"):
        parse_profile({"run": {}}, "x.yaml")


def test_every_step_of_the_recipe_is_built_and_an_unknown_one_is_named():
    assert set(STEP_PARAMS) == set(STEP_ORDER)
    with pytest.raises(ProfileError, match="unknown step 'evaluation'; known steps: prepare, annotate"):
        parse_profile({"steps": {"evaluation": {}}}, "x.yaml")


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


# --------------------------------------------------------------------------------------------------------------
# Values that used to validate and fail late (issue: reliability)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, words", [
    ("run: {seed: 4294967296}\nsteps: {prepare: {}}\n", "less than or equal to 4294967295"),
    ("steps:\n  prepare: {medical_fraction: 0.8, ambiguous_fraction: 0.3}\n", "more than 1"),
    ("steps:\n  prepare: {pretrain_epochs: .inf}\n", "finite number"),
    ("steps:\n  prepare: {chat_examples: true}\n", "True is not a number"),
    ("steps:\n  prepare: {base_model: ./no/such/model}\n", "neither an existing folder"),
    ("steps:\n  prepare: {base_model: 'not a hub id!'}\n", "nor a hub id"),
    ("steps:\n  prepare: {source: local, local_files: [data/corpus.jsonl], base_model: org/model}\n", "no such file"),
    ("steps:\n  classify: {gold_file: data/gold.jsonl}\n", "no such file"),
    ("steps:\n  prepare: {}\n  prepare: {seed: 1}\n", "appears twice (lines 2 and 3)"),
])
def test_values_that_would_fail_late_are_refused_at_validation(tmp_path, text, words):
    with pytest.raises(ProfileError) as err:
        load_profile(write(tmp_path, text))
    assert words in str(err.value)


def test_a_latin1_profile_names_the_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# Profil\nrun:\n  name: m\xfcnchen\n".encode("latin-1"))
    with pytest.raises(ProfileError, match=r"latin1.yaml:3: not UTF-8 text"):
        load_profile(path)


def test_relative_paths_start_at_the_profile_folder(tmp_path, tiny_model_dir):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "data" / "gold.jsonl").write_text('{"id": "1", "label": "medical"}\n')
    (tmp_path / "models").symlink_to(tiny_model_dir)
    text = ("run: {output_dir: ~/runs/x}\nsteps:\n  prepare: {source: local, local_files: [data/corpus.jsonl], "
            "base_model: models}\n  classify: {gold_file: data/gold.jsonl}\n  merge: {instruct: org/instruct-model}\n")
    prof = load_profile(write(tmp_path, text))
    assert prof.steps["classify"].gold_file == str(tmp_path / "data" / "gold.jsonl")
    assert prof.steps["prepare"].local_files == [str(tmp_path / "data" / "corpus.jsonl")]
    assert prof.steps["prepare"].base_model == str((tmp_path / "models").resolve())
    assert prof.steps["merge"].instruct == "org/instruct-model"  # a hub id stays as it is
    assert prof.run_dir() == Path.home() / "runs" / "x" and "~" not in str(prof.run_dir())


@pytest.mark.parametrize("field, secret", [
    ("model", "sk-proj-abcdefghijklmnop1234"),
    ("base_url", "http://h/v1?token=hf_abcdefghijklmnopqrstu"),
    ("token", "sk-live-0123456789abcdef"),
    ("api_key_env", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
])
def test_a_secret_in_any_field_is_refused_and_never_echoed(tmp_path, field, secret):
    values = {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m", field: secret}
    path = write(tmp_path, "steps:\n  annotate:\n" + "".join(f"    {k}: '{v}'\n" for k, v in values.items()))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert secret not in str(err.value) and "not shown" in str(err.value)


def test_hashes_and_hub_ids_are_not_secrets():
    from medslm.params import looks_like_secret, scrub_secrets

    for fine in ("0123456789abcdef0123456789abcdef01234567", "Qwen/Qwen2.5-1.5B-Instruct", "HuggingFaceFW/fineweb-2",
                 "What is the capital of France?", "outputs/smoke"):
        assert not looks_like_secret(fine), fine
    assert scrub_secrets("401: bad header Authorization: Bearer abc.def-123 for key sk-abcdefghij12", ["abc.def-123"]) \
        == "401: bad header Authorization: Bearer *** for key ***"
