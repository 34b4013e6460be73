"""One self-contained HTML page per run: ``medslm report RUN_DIR`` writes ``RUN_DIR/report.html``.

Nothing is recomputed: the page shows what the steps wrote — ``manifest.json`` (status, wall time, parameters,
artifacts with bytes and sha256, the upstream steps each step read, package versions), each step's
``metrics.json`` and its ``figures/*.png`` (inlined as base64, so the page opens offline).

The headline table has one row per model variant, read from the metrics that exist:

* ``00_prepare``: ``probes`` (the base model), ``03_cpt``: ``after.probes``, ``04_merge``: ``sweep[i].scores``,
* ``06_align``: ``results.<stage>.probes`` / ``results.<stage>.checks`` when the step wrote them,
* any step: ``variants`` (variant → scores, e.g. benchmark accuracies), ``win_rates`` (variant → number or
  ``{"win_rate": …}``) and ``failure_rates`` (variant → {failure → rate}); 07/08 report in these shapes.

Every number in the headline carries ``data-source="<step dir>/metrics.json#<JSON pointer>"`` (RFC 6901, e.g.
``03_cpt/metrics.json#/after/probes/medical``), so a reader (and the test) can trace it to the file it came from.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medslm.params import STEP_DIRS, STEP_ORDER
from medslm.rundir import read_json, write_text

PREFERRED_COLUMNS = ("medical", "general", "chat")
MAX_KEY_METRICS = 80  # scalar metrics listed per step (curves and long lists are left to the figures)
MAX_ARTIFACTS = 200


@dataclass
class Cell:
    """One number of the headline and where it was read (``file#/json/pointer``)."""

    value: float
    source: str


@dataclass
class Variant:
    """A model variant's row of the headline: its name, the step that made it and its scores."""

    name: str
    step: str
    scores: dict[str, Cell] = field(default_factory=dict)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def source_of(step: str, *keys: Any) -> str:
    """``<step dir>/metrics.json#<JSON pointer to keys>`` (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``)."""
    pointer = "".join("/" + str(key).replace("~", "~0").replace("/", "~1") for key in keys)
    return f"{STEP_DIRS[step]}/metrics.json#{pointer}"


def _scores(step: str, name: str, scores: Any, keys: tuple, prefix: str = "") -> Variant | None:
    """A variant from the mapping of scores at ``keys`` (numeric values only); None when it holds none."""
    if not isinstance(scores, dict):
        return None
    cells = {f"{prefix}{key}": Cell(float(value), source_of(step, *keys, key))
             for key, value in scores.items() if _numeric(value)}
    return Variant(name, step, cells) if cells else None


def variants_of(step: str, metrics: dict[str, Any]) -> Iterator[Variant]:
    """The headline variants a step's metrics hold (see the module docstring for the shapes read)."""
    if step == "prepare":
        yield from filter(None, [_scores(step, "base model", metrics.get("probes"), ("probes",))])
    if step == "cpt":
        yield from filter(None, [_scores(step, "CPT model", (metrics.get("after") or {}).get("probes"), ("after", "probes"))])
    if step == "merge":
        selected = (metrics.get("selection") or {}).get("label")
        for i, row in enumerate(metrics.get("sweep") or []):
            label = str(row.get("label", f"t={row.get('t')}"))
            name = f"{label} (selected)" if label == selected else label
            variant = _scores(step, name, row.get("scores"), ("sweep", i, "scores"))
            if variant:
                yield variant
    if step == "align":
        for stage, summary in (metrics.get("results") or {}).items():
            for part in ("probes", "checks"):
                variant = _scores(step, f"{stage.upper()} model", (summary or {}).get(part), ("results", stage, part))
                if variant:
                    yield variant
    for name, scores in (metrics.get("variants") or {}).items():
        variant = _scores(step, str(name), scores, ("variants", name))
        if variant:
            yield variant
    for name, rate in (metrics.get("win_rates") or {}).items():
        if isinstance(rate, dict):
            variant = _scores(step, str(name), rate, ("win_rates", name))
        elif _numeric(rate):
            variant = Variant(str(name), step, {"win_rate": Cell(float(rate), source_of(step, "win_rates", name))})
        else:
            variant = None
        if variant:
            yield variant
    for name, rates in (metrics.get("failure_rates") or {}).items():
        variant = _scores(step, str(name), rates, ("failure_rates", name), prefix="failure: ")
        if variant:
            yield variant


def headline(step_metrics: dict[str, dict[str, Any]]) -> tuple[list[str], list[Variant]]:
    """The headline's columns and rows: variants with the same name (e.g. a sweep label and its benchmark scores)
    share a row; preferred columns (medical, general, chat) come first."""
    rows: dict[str, Variant] = {}
    for step, metrics in step_metrics.items():
        for variant in variants_of(step, metrics):
            row = rows.setdefault(variant.name, Variant(variant.name, variant.step))
            row.scores.update(variant.scores)
    seen = {key for row in rows.values() for key in row.scores}
    columns = [c for c in PREFERRED_COLUMNS if c in seen] + sorted(seen - set(PREFERRED_COLUMNS))
    return columns, list(rows.values())


def flatten_scalars(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` for every number, bool or short string of nested metrics; lists of more than a few
    items (loss curves) are skipped: the figures show them."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from flatten_scalars(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        if len(data) <= 8 and all(not isinstance(v, dict | list) for v in data):
            yield prefix, ", ".join(str(v) for v in data)
        elif len(data) <= 8:
            for i, value in enumerate(data):
                yield from flatten_scalars(value, f"{prefix}.{i}")
    elif data is None or _numeric(data) or isinstance(data, bool) or (isinstance(data, str) and len(data) <= 200):
        yield prefix, data


def format_value(value: Any) -> str:
    """How the page shows a value: floats with 4 significant digits, the rest as they are."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _figures(folder: Path) -> list[dict[str, str]]:
    return [{"name": png.stem, "data": base64.b64encode(png.read_bytes()).decode("ascii")}
            for png in sorted(folder.glob("*.png"))]


def collect(run_dir: str | Path) -> dict[str, Any]:
    """Everything the page shows, read from ``run_dir`` (manifest, metrics, figures); no number is recomputed."""
    run_dir = Path(run_dir).resolve()
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: {run_dir} is not a run directory (run `medslm run` first)")
    manifest = read_json(manifest_path)
    entries = manifest.get("steps", {})
    step_metrics: dict[str, dict[str, Any]] = {}
    sections = []
    for step in STEP_ORDER:
        folder = run_dir / STEP_DIRS[step]
        if step not in entries and not folder.is_dir():
            continue
        entry = entries.get(step, {})
        metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
        if metrics:
            step_metrics[step] = metrics
        key_metrics = [(k, v) for k, v in flatten_scalars({k: v for k, v in metrics.items() if k not in ("params", "step")})]
        params = metrics.get("params") or entry.get("params") or {}
        artifacts = entry.get("artifacts", [])
        sections.append({
            "step": step, "dir": STEP_DIRS[step], "status": entry.get("status", "not in manifest"),
            "seconds": entry.get("seconds"), "started": entry.get("started"), "ended": entry.get("ended"),
            "error": entry.get("error"), "figures": _figures(folder / "figures"),
            "metrics": key_metrics[:MAX_KEY_METRICS], "metrics_left_out": max(0, len(key_metrics) - MAX_KEY_METRICS),
            "params": sorted(flatten_scalars(params)), "artifacts": artifacts[:MAX_ARTIFACTS],
            "artifacts_left_out": max(0, len(artifacts) - MAX_ARTIFACTS),
            "artifact_bytes": sum(a.get("bytes", 0) for a in artifacts),
            "upstream": entry.get("upstream", {}), "notebook": entry.get("notebook"),
            "packages": entry.get("packages") or manifest.get("packages", {}),
        })
    columns, variants = headline(step_metrics)
    return {"run_dir": str(run_dir), "run": manifest.get("run", {}), "profile": manifest.get("profile"),
            "packages": manifest.get("packages", {}), "columns": columns, "variants": variants,
            "sections": sections, "step_dirs": STEP_DIRS}


def render_report(run_dir: str | Path) -> str:
    """The report page of ``run_dir`` as HTML (Jinja2 template ``medslm/templates/report.html.j2``)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("medslm", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = format_value
    env.filters["size"] = lambda n: f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n:,} B"
    return env.get_template("report.html.j2").render(**collect(run_dir))


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path."""
    path = Path(run_dir) / "report.html"
    write_text(path, render_report(run_dir))
    return path
