"""report.html: one offline page whose numbers are those of the metrics files (checked cell by cell), figures inline,
artifacts and lineage from the manifest; `medslm run` writes it at the end."""

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from medslm.cli import main
from medslm.report import format_value, write_report
from medslm.rundir import RunDir, package_versions, write_json
from medslm.runner import run_profile

PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


class Cells(HTMLParser):
    """Collects the headline cells (data-source, data-value, shown text), the img sources and every tag name."""

    def __init__(self):
        super().__init__()
        self.cells, self.images, self.tags, self._open = [], [], set(), None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "td" and "data-source" in attrs:
            self._open = {**attrs, "text": ""}

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.cells.append(self._open)
            self._open = None


def parse(html: str) -> Cells:
    parser = Cells()
    parser.feed(html)
    return parser


def lookup(run: Path, source: str) -> float:
    """The value a ``file#/json/pointer`` source names (RFC 6901), read independently of medslm.report."""
    file, pointer = source.split("#")
    value = json.loads((run / file).read_text())
    for key in pointer.split("/")[1:]:
        key = key.replace("~1", "/").replace("~0", "~")
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


@pytest.fixture
def fake_run(tmp_path):
    """A run folder as the runner leaves it: prepare, cpt, merge with metrics, annotate without, a failed align."""
    run = RunDir(tmp_path / "run")
    run.set_run_info(run={"name": "fake"}, profile="params/fake.yaml", packages=package_versions(["pytest"]))
    metrics = {
        "prepare": {"probes": {"medical": 0.3125, "general": 0.9, "chat": 0.875, "detail": {"x": 1}},
                    "perplexity": {"medical": 41.5}, "pretrain": {"loss_curve": [[i, 1.0 / (i + 1)] for i in range(50)]}},
        "cpt": {"before": {"probes": {"medical": 0.3125, "general": 0.9}},
                "after": {"probes": {"medical": 0.71, "general": 0.8333333333, "chat": 0.7}}},
        "merge": {"sweep": [{"t": 0.0, "label": "instruct", "scores": {"medical": 0.3, "general": 0.9, "ppl_medical": 40.2}},
                            {"t": 0.5, "label": "slerp t=0.5", "scores": {"medical": 0.61, "general": 0.88, "chat": 0.8}}],
                  "selection": {"label": "slerp t=0.5"}},
        "evaluate": {"win_rates": {"slerp t=0.5": 0.625}, "variants": {"slerp t=0.5": {"medqa": 0.41, "a/b~c": 0.5}}},
    }
    upstream: dict[str, str] = {}
    for step in ("prepare", "annotate", "cpt", "merge", "evaluate"):
        folder = run.step(step).path
        (folder / "figures").mkdir(parents=True)
        (folder / "figures" / f"{step}_plot.png").write_bytes(PNG)
        if step in metrics:
            write_json(folder / "metrics.json", {"step": step, "params": {"seed_note": step}, **metrics[step]})
        run.update_step(step, status="done", seconds=12.5, params={"lr": 0.1}, upstream=dict(upstream),
                        artifacts=run.collect_artifacts(step))
        upstream[step] = f"digest-{step}"
    run.update_step("align", status="failed", error="ValueError: boom")
    return run.path


def test_every_headline_number_equals_its_metrics_file(fake_run):
    html = write_report(fake_run).read_text()
    cells = parse(html).cells
    # independent count of the numeric scores the fake metrics hold (probes, after.probes, sweep, win rate, variant)
    assert len(cells) == 3 + 3 + 3 + 3 + 1 + 2
    for cell in cells:
        expected = lookup(fake_run, cell["data-source"])
        assert float(cell["data-value"]) == expected, cell
        assert cell["text"] == format_value(float(expected)), cell
    shown = {(c["data-variant"], c["data-column"]): float(c["data-value"]) for c in cells}
    assert shown[("base model", "medical")] == 0.3125
    assert shown[("CPT model", "general")] == 0.8333333333
    assert shown[("slerp t=0.5 (selected)", "chat")] == 0.8 and shown[("slerp t=0.5", "medqa")] == 0.41
    assert shown[("slerp t=0.5", "win_rate")] == 0.625


def test_a_changed_metrics_file_no_longer_matches(fake_run):
    """Negative control: the cell-by-cell check above detects a number that differs from the file."""
    cells = parse(write_report(fake_run).read_text()).cells
    path = fake_run / "03_cpt" / "metrics.json"
    path.write_text(path.read_text().replace("0.71", "0.72"))
    assert any(float(c["data-value"]) != lookup(fake_run, c["data-source"]) for c in cells)


def test_sections_figures_artifacts_lineage_offline(fake_run):
    html = write_report(fake_run).read_text()
    page = parse(html)
    for folder in ("00_prepare", "01_annotate", "03_cpt", "04_merge", "06_align", "07_evaluate"):
        assert f'<section id="{folder}">' in html, folder
    assert len(page.images) == 5 and all(src == "data:image/png;base64," + base64.b64encode(PNG).decode()
                                         for src in page.images)
    manifest = json.loads((fake_run / "manifest.json").read_text())
    for entry in manifest["steps"].values():
        for artifact in entry.get("artifacts", []):
            assert artifact["path"] in html and artifact["sha256"] in html
    assert "digest-prepare" in html and "ValueError: boom" in html and "status-failed" in html
    assert "pytest " + manifest["packages"]["pytest"] in html
    assert "perplexity.medical" in html and "41.5" in html  # key metrics of a step
    assert "loss_curve" not in html  # curves are left to the figures
    assert "http://" not in html and "https://" not in html and not page.tags & {"link", "script", "iframe"}


def test_cli_report_and_missing_run(fake_run, tmp_path, capsys):
    assert main(["report", str(fake_run)]) == 0
    assert (fake_run / "report.html").is_file()
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        write_report(tmp_path / "nothing")


def test_medslm_run_writes_the_report(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    params = new_code_cell("n_documents = 3000\nrun_dir = ''\nprofile = ''")
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell(
        "import json\nfrom pathlib import Path\nout = Path(run_dir) / '00_prepare'\nout.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'probes': {'medical': n_documents / 1000}}))")
    nb = new_notebook(cells=[params, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "00_prepare.ipynb")
    profile = tmp_path / "params" / "p.yaml"
    profile.parent.mkdir()
    profile.write_text("run: {name: t, output_dir: outputs/t}\nsteps:\n  prepare: {n_documents: 7}\n")
    run = run_profile(profile, notebooks_dir=notebooks, log=lambda line: None)
    cells = parse((run / "report.html").read_text()).cells
    assert [(c["data-source"], float(c["data-value"])) for c in cells] == [("00_prepare/metrics.json#/probes/medical", 0.007)]
