"""Notebooks: committed without outputs, python3 kernel, one parameters cell that agrees with the step's model."""

import shutil
from pathlib import Path

import nbformat
import pytest

from medslm.notebook import parameters_cell_source, sync_parameters_cells
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
def test_parameters_cell_is_generated_from_the_step_model(path):
    """The cell is exactly what medslm.params generates (``make cells``), and running it gives the model defaults."""
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    step = STEP_OF[path.name]
    assert tagged[0].source == parameters_cell_source(step), f"{path.name}: run `make cells`"
    namespace: dict = {}
    exec(compile(tagged[0].source, path.name, "exec"), namespace)  # noqa: S102 - our own notebook
    model = STEP_PARAMS[step]
    assert model.from_namespace(namespace) == model()
    assert set(model.model_fields) <= set(namespace) and namespace["profile"] == "../params/smoke.yaml"


def test_cells_check_finds_a_hand_edited_cell(tmp_path):
    shutil.copy(REPO / "notebooks" / "03_cpt.ipynb", tmp_path / "03_cpt.ipynb")
    assert sync_parameters_cells(tmp_path, check=True) == []
    nb = nbformat.read(tmp_path / "03_cpt.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace("learning_rate = 0.003", "learning_rate = 0.001")
    nbformat.write(nb, tmp_path / "03_cpt.ipynb")
    assert sync_parameters_cells(tmp_path, check=True) == [tmp_path / "03_cpt.ipynb"]
    sync_parameters_cells(tmp_path)
    assert sync_parameters_cells(tmp_path, check=True) == []
