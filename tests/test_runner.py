"""The runner executes notebooks with papermill, records the manifest, skips unchanged steps and reports failures.

These tests use small stand-in notebooks for the prepare step, so they run in seconds; the real notebooks run in
test_end_to_end.py.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from medslm.params import ProfileError
from medslm.rundir import RunDir, read_json
from medslm.runner import StepFailed, run_profile, select_steps

PARAMS = "n_documents = 3000\nrun_dir = ''\nprofile = ''"


def make_notebook(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    params = new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "00_prepare.ipynb"
    nbformat.write(nb, path)
    return path


WRITE = """\
from pathlib import Path
out = Path(run_dir) / "00_prepare"
out.mkdir(parents=True, exist_ok=True)
(out / "corpus.jsonl").write_text('{"text": "x", "n": %d}\\n' % n_documents)
"""


@pytest.fixture
def setup(tmp_path):
    nbs = tmp_path / "notebooks"
    make_notebook(nbs, WRITE)
    profile = tmp_path / "params" / "p.yaml"
    profile.parent.mkdir()
    profile.write_text("run: {name: t, output_dir: outputs/t}\nsteps:\n  prepare: {n_documents: 7}\n")
    return tmp_path, nbs, profile


def test_run_writes_manifest_and_executed_notebook(setup):
    root, nbs, profile = setup
    lines = []
    run_dir = run_profile(profile, notebooks_dir=nbs, log=lines.append)
    assert run_dir == root / "outputs" / "t"
    assert (run_dir / "00_prepare" / "corpus.jsonl").read_text() == '{"text": "x", "n": 7}\n'
    executed = nbformat.read(run_dir / "notebooks" / "00_prepare.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "n_documents = 7" in injected[0].source and str(run_dir) in injected[0].source
    m = read_json(run_dir / "manifest.json")
    entry = m["steps"]["prepare"]
    assert entry["status"] == "done" and entry["started"] and entry["ended"] and entry["params_hash"]
    assert entry["artifacts"][0]["path"] == "00_prepare/corpus.jsonl" and len(entry["artifacts"][0]["sha256"]) == 64
    assert m["packages"]["papermill"]
    assert any("running" in line for line in lines) and any("done in" in line for line in lines)


def test_unchanged_step_is_skipped_and_changes_rerun(setup):
    root, nbs, profile = setup
    run_profile(profile, notebooks_dir=nbs, log=lambda s: None)
    lines = []
    run_profile(profile, notebooks_dir=nbs, log=lines.append)
    assert "skipped" in lines[-1]
    run_profile(profile, notebooks_dir=nbs, log=lines.append, force=True)
    assert "done in" in lines[-1]
    profile.write_text(profile.read_text().replace("n_documents: 7", "n_documents: 8"))
    run_profile(profile, notebooks_dir=nbs, log=lines.append)
    assert "done in" in lines[-1]
    # a deleted artifact makes the step run again
    (root / "outputs" / "t" / "00_prepare" / "corpus.jsonl").unlink()
    run_profile(profile, notebooks_dir=nbs, log=lines.append)
    assert "done in" in lines[-1]


def test_an_edited_library_reruns_the_steps(setup, tmp_path, monkeypatch):
    """The notebooks are thin: an edited medslm function changes what a step computes, so it must not be skipped."""
    import shutil

    import medslm
    from medslm import plan

    package = tmp_path / "medslm-copy"
    shutil.copytree(Path(medslm.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = plan.library_digest(package)
    assert before == plan.library_digest(Path(medslm.__file__).parent)
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"x")  # compiled files are not the source
    assert plan.library_digest.__wrapped__(package) == before
    with (package / "stats.py").open("a") as f:
        f.write("# edited\n")
    assert plan.library_digest.__wrapped__(package) != before

    root, nbs, profile = setup
    run_profile(profile, notebooks_dir=nbs, log=lambda s: None)
    monkeypatch.setattr(plan, "library_digest", lambda: "an edited library")
    lines = []
    run_profile(profile, notebooks_dir=nbs, log=lines.append)
    assert "changed since its last run: medslm library" in lines[0] and "done in" in lines[-1]


def test_failure_names_notebook_cell_and_executed_copy(setup):
    root, nbs, profile = setup
    make_notebook(nbs, "raise ValueError('bad corpus record at line 3')")
    with pytest.raises(StepFailed) as exc:
        run_profile(profile, notebooks_dir=nbs, log=lambda s: None)
    msg = str(exc.value)
    assert "00_prepare.ipynb" in msg and "cell" in msg and "ValueError: bad corpus record at line 3" in msg
    # IPython colours the traceback; the message a terminal shows has no escape codes left
    assert any("\x1b[" in line for line in exc.value.__cause__.traceback)
    assert "\x1b" not in msg
    executed = root / "outputs" / "t" / "notebooks" / "00_prepare.ipynb"
    assert str(executed) in msg and executed.exists()
    entry = RunDir(root / "outputs" / "t").read_manifest()["steps"]["prepare"]
    assert entry["status"] == "failed" and "bad corpus record" in entry["error"]


def test_cell_timeout_is_reported(setup):
    root, nbs, profile = setup
    make_notebook(nbs, "import time\ntime.sleep(30)")
    with pytest.raises(StepFailed, match="timed out"):
        run_profile(profile, notebooks_dir=nbs, log=lambda s: None, execution_timeout=2)


def test_select_steps(setup):
    from medslm.params import load_profile

    _, _, profile = setup
    prof = load_profile(profile)
    assert select_steps(prof) == ["prepare"]
    assert select_steps(prof, from_step="prepare") == ["prepare"]
    with pytest.raises(ProfileError, match="not in this profile"):
        select_steps(prof, steps=["merge"])


def test_missing_notebook_is_an_error_before_running(tmp_path, setup):
    _, _, profile = setup
    with pytest.raises(ProfileError, match="has no notebook"):
        run_profile(profile, notebooks_dir=tmp_path / "nowhere", log=lambda s: None)


@pytest.mark.skipif(os.name != "posix", reason="IPC kernel transport is POSIX only")
def test_the_terminal_shows_only_the_step_lines(setup, capfd, monkeypatch):
    """No "Kernel is running over TCP without encryption" per step (ipykernel's warning on its inherited stderr)."""
    root, nbs, profile = setup
    run_profile(profile, notebooks_dir=nbs, log=print)
    out, err = capfd.readouterr()
    assert err == ""
    steps = [line.split(":")[0] for line in out.splitlines() if not line.startswith("    ")]  # not progress lines
    assert steps == ["[1/1] prepare", "[1/1] prepare"]
    # negative control: over TCP the kernel's warning reaches the captured stderr, so the check above can fail
    from traitlets.config import Config

    import medslm.runner

    monkeypatch.setattr(medslm.runner, "kernel_config", Config)
    run_profile(profile, notebooks_dir=nbs, log=print, force=True)
    assert "without encryption" in capfd.readouterr().err


KERNEL_REPORT = """\
import json, os
from pathlib import Path
import torch
out = Path(run_dir) / "00_prepare"
out.mkdir(parents=True, exist_ok=True)
names = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
(out / "corpus.jsonl").write_text(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                                              **{name: os.environ.get(name) for name in names}}) + "\\n")
"""


@pytest.mark.parametrize("cpu_kernels", ["avx2", "native"])
def test_kernels_run_on_the_pinned_cpu_kernels(tmp_path, monkeypatch, cpu_kernels):
    """run.cpu_kernels avx2 (the default) starts the notebooks' kernels on PyTorch's, MKL's and oneDNN's AVX2 paths,
    so a CPU run's figures do not depend on whether the CPU has AVX-512; native leaves the widest; the runner's own
    environment is restored afterwards."""
    import json

    import torch

    from medslm.cpu_kernels import AVX2_KERNELS

    for name in AVX2_KERNELS:
        monkeypatch.delenv(name, raising=False)
    nbs = tmp_path / "notebooks"
    make_notebook(nbs, KERNEL_REPORT)
    profile = tmp_path / "p.yaml"
    profile.write_text(f"run: {{name: t, output_dir: {tmp_path / 'run'}, cpu_kernels: {cpu_kernels}}}\n"
                       "steps:\n  prepare: {}\n")
    run_dir = run_profile(profile, notebooks_dir=nbs, log=lambda s: None)
    seen = json.loads((run_dir / "00_prepare" / "corpus.jsonl").read_text())
    native = torch.backends.cpu.get_cpu_capability()
    if cpu_kernels == "avx2" and native in ("AVX2", "AVX512"):
        assert seen == {"capability": "AVX2", **AVX2_KERNELS}
    else:
        assert seen == {"capability": native, **{name: None for name in AVX2_KERNELS}}
    assert not any(name in os.environ for name in AVX2_KERNELS)


def test_cpu_kernel_variables_keep_what_the_user_set_and_need_avx2():
    from medslm.cpu_kernels import AVX2_KERNELS, kernel_variables

    assert kernel_variables("avx2", environ={}, has_avx2=True) == AVX2_KERNELS
    assert kernel_variables("avx2", environ={"MKL_CBWR": "COMPATIBLE"}, has_avx2=True) == {
        "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert kernel_variables("avx2", environ={}, has_avx2=False) == {}  # an older CPU would fault on AVX2 code
    assert kernel_variables("native", environ={}, has_avx2=True) == {}
    with pytest.raises(ValueError, match="run.cpu_kernels is 'avx512'; allowed: 'avx2', 'native'"):
        kernel_variables("avx512", environ={}, has_avx2=True)
