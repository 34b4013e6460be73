"""Notebooks: committed without outputs, python3 kernel, one parameters cell that agrees with the step's model."""

import ast
from pathlib import Path

import nbformat
import pytest

from medslm.params import STEP_DIRS, STEP_PARAMS

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
STEP_OF = {f"{d}.ipynb": s for s, d in STEP_DIRS.items()}


def test_every_built_step_has_a_notebook():
    names = {nb.name for nb in NOTEBOOKS}
    for step in STEP_PARAMS:
        assert f"{STEP_DIRS[step]}.ipynb" in names, step


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_clean_and_python3(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs: clear them"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_matches_the_step_model(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    namespace: dict = {}
    exec(compile(tagged[0].source, path.name, "exec"), namespace)  # noqa: S102 - our own notebook
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    model = STEP_PARAMS[STEP_OF[path.name]]
    assert assigned == set(model.model_fields) | {"run_dir", "profile"}
    defaults = model().model_dump()
    for name in model.model_fields:
        assert namespace[name] == defaults[name], f"{path.name}: {name} = {namespace[name]!r}, model default {defaults[name]!r}"
    assert namespace["profile"] == "../params/smoke.yaml"
