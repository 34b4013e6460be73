"""Installing without a checkout: the wheel carries the notebooks and profiles, `medslm init` copies them out and
the prepare step runs from the copied folder; every notebook's install cell is the generated one and keeps torch.

The wheel test installs into a fresh venv (`python -m venv --system-site-packages`) whose dependencies (torch,
transformers, papermill, …) come from the environment running the tests, through a .pth file naming its
site-packages: no network, and the medslm that runs is the wheel's (PYTHONPATH is cleared, kernelspecs isolated).
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest
import yaml

from medslm.notebook import install_cell_source, sync_install_cells

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TINY_PREPARE = {"n_documents": 300, "pretrain_documents": 150, "chat_examples": 150, "vocab_size": 400,
                "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "pretrain_epochs": 1.0}


def test_no_invented_url_remains():
    """The old install line named a repository that does not exist; no tracked file may name it again."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    invented = "github.com/" + "medslm/medslm"  # split so this file does not match itself
    hits = [f for f in files if (REPO / f).is_file() and invented in (REPO / f).read_text(errors="ignore")]
    assert hits == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_is_the_generated_one(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "install" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].source == install_cell_source(), f"{path.name}: run `medslm cells`"
    assert nb.cells.index(tagged[0]) == 1  # right after the title


def test_cells_check_finds_an_edited_install_cell(tmp_path):
    target = tmp_path / "00_prepare.ipynb"
    target.write_bytes((REPO / "notebooks" / "00_prepare.ipynb").read_bytes())
    assert sync_install_cells(tmp_path, check=True) == []
    nb = nbformat.read(target, as_version=4)
    cell = next(c for c in nb.cells if "install" in c.metadata.get("tags", []))
    cell.source = cell.source.replace('MEDSLM_SOURCE = ".."', 'MEDSLM_SOURCE = "git+https://example.invalid/x"')
    nbformat.write(nb, target)
    assert sync_install_cells(tmp_path, check=True) == [target]
    sync_install_cells(tmp_path)
    assert sync_install_cells(tmp_path, check=True) == []


def run_install_cell(cwd: Path, monkeypatch) -> list[str]:
    """Execute the install cell as IPython would (magics transformed) with medslm 'missing'; return the %pip lines."""
    import importlib.util

    from IPython.core.inputtransformer2 import TransformerManager

    calls: list[str] = []
    namespace: dict = {}

    class Shell:
        def run_line_magic(self, name, line, *args):  # IPython expands {names} from the cell's namespace
            calls.append(f"{name} {line.format(**namespace)}")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "medslm" else real_find_spec(n, *a))
    monkeypatch.chdir(cwd)
    code = TransformerManager().transform_cell(install_cell_source())
    namespace["get_ipython"] = Shell
    exec(compile(code, "install-cell", "exec"), namespace)  # noqa: S102 - our own cell
    return calls


def test_install_cell_installs_the_checkout_and_keeps_torch(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'medslm'\n")
    (tmp_path / "notebooks").mkdir()
    calls = run_install_cell(tmp_path / "notebooks", monkeypatch)
    keep = Path(tempfile.gettempdir()) / "medslm-keep-torch.txt"
    assert calls == [f'pip install -q ".." -c {keep}']
    assert keep.read_text() == f"torch=={version('torch')}\n"


def test_install_cell_outside_a_checkout_asks_for_a_source(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="set MEDSLM_SOURCE"):
        run_install_cell(tmp_path, monkeypatch)


@pytest.mark.slow
def test_wheel_init_and_prepare_without_a_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", JUPYTER_PATH="", JUPYTER_DATA_DIR=str(tmp_path / "jupyter"), PYTHONNOUSERSITE="1")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, env=env, capture_output=True)
    wheel = next(wheels.glob("medslm-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "outer_env.pth").write_text("\n".join(sorted(outer)) + "\n")  # torch & co. of this environment
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, env=env, capture_output=True)

    where = subprocess.run([python, "-c", "import medslm, medslm.runner as r; print(medslm.__file__); "
                            "print(r.NOTEBOOKS_DIR)"], capture_output=True, text=True, check=True, env=env,
                           cwd=tmp_path).stdout.split()
    assert all(w.startswith(str(venv)) for w in where), where  # the wheel's medslm and its packaged notebooks

    project = tmp_path / "project"
    medslm = str(venv / "bin" / "medslm")
    subprocess.run([medslm, "init", str(project)], check=True, env=env, cwd=tmp_path, capture_output=True)
    assert {p.name for p in (project / "notebooks").glob("*.ipynb")} == {p.name for p in NOTEBOOKS}
    assert (project / "params" / "smoke.yaml").read_text() == (REPO / "params" / "smoke.yaml").read_text()
    assert (project / "params" / "accelerate" / "fsdp_2gpu.yaml").is_file()
    again = subprocess.run([medslm, "init", str(project)], env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "exists already" in again.stderr

    profile = yaml.safe_load((project / "params" / "smoke.yaml").read_text())
    profile["run"].update(name="tiny", output_dir="outputs/tiny")
    profile["steps"] = {"prepare": TINY_PREPARE}
    (project / "params" / "tiny.yaml").write_text(yaml.safe_dump(profile))
    proc = subprocess.run([medslm, "run", "params/tiny.yaml"], env=env, cwd=project, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = project / "outputs" / "tiny"
    assert (run / "00_prepare" / "metrics.json").is_file() and (run / "00_prepare" / "model").is_dir()
    assert (run / "report.html").is_file() and "00_prepare" in (run / "report.html").read_text()
