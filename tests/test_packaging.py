"""Packaging: pyproject and environment.yml agree; required layout and tooling exist."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ["jupyterlab", "papermill", "torch", "transformers", "datasets", "peft", "trl", "bitsandbytes", "mergekit",
            "matplotlib"]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ @]", spec, maxsplit=1)[0].lower()


def test_pyproject_and_environment_agree():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    env_specs = [s for s in pip if not s.startswith("-e")]
    assert sorted(env_specs) == sorted(deps)
    assert any(s.startswith("-e .") for s in pip)
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))


def test_required_packages_are_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {_name(d) for d in project["dependencies"]}
    assert set(REQUIRED) <= names
    assert project["scripts"]["medslm"] == "medslm.cli:main"


def test_layout_and_tooling():
    for name in ["notebooks", "lib", "params", "outputs", "tests", "bench", "environment.yml", "README.md", "Makefile"]:
        assert (REPO / name).exists(), name
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
    make = (REPO / "Makefile").read_text()
    for target in ("run:", "test:", "lab:", "bench:", "clean:"):
        assert target in make
    assert "TORCH_SPEC ?=" in make
    ignored = (REPO / ".gitignore").read_text()
    assert "outputs/*" in ignored and ".venv" in ignored
