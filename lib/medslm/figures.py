"""The README's figure table, generated from a run's metrics files (never typed by hand).

``medslm figures RUN_DIR`` prints the table; ``--write README.md`` replaces the block between the markers
``<!-- figures:start -->`` and ``<!-- figures:end -->``. A test regenerates it from a fresh smoke run and compares
every number with the README's within a stated tolerance (the toy world's figures vary by ~0.01 between machines).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START, END = "<!-- figures:start -->", "<!-- figures:end -->"
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


@dataclass(frozen=True)
class Figure:
    """One cell of the table: a label and the metrics path of each number in it (``{}`` placeholders)."""

    step: str
    text: str  # e.g. "general probes {} → {}"
    paths: tuple[str, ...]  # dotted paths into <run>/<step>/metrics.json, one per {}
    digits: int = 2
    tolerance: float = 0.02  # how far a rerun may drift (training on a CPU varies by ~0.01)


FIGURES = (
    Figure("00_prepare", "base model ({} parameters): general probes {}, chat probes {}, medical probes {} "
           "(chance 0.25)", ("model.parameters", "probes.general", "probes.chat", "probes.medical")),
    Figure("01_annotate", "lexicon annotator against gold: precision {}, recall {}, F1 {} on {} documents; on the "
           "{} documents of held-out sentence families precision {}, recall {}, F1 {}",
           ("annotation.gold.precision", "annotation.gold.recall", "annotation.gold.f1", "annotation.gold.n",
            "annotation.gold_held_out.n", "annotation.gold_held_out.precision", "annotation.gold_held_out.recall",
            "annotation.gold_held_out.f1")),
    Figure("02_classify", "at target precision 0.95: validation precision {}, recall {}; full corpus against gold "
           "precision {}, recall {}; held-out sentence families ({} documents) precision {}, recall {}, F1 {}",
           ("threshold.precision", "threshold.recall", "filter.gold.precision", "filter.gold.recall",
            "filter.gold_held_out.n", "filter.gold_held_out.precision", "filter.gold_held_out.recall",
            "filter.gold_held_out.f1")),
    Figure("03_cpt", "medical probes {} → {}; general {} → {} and chat {} → {} (forgetting)",
           ("before.probes.medical", "after.probes.medical", "before.probes.general", "after.probes.general",
            "before.probes.chat", "after.probes.chat")),
    Figure("04_merge", "selected t = {} with medical {}, general {}, chat {}",
           ("selection.selected.t", "selection.selected.scores.medical", "selection.selected.scores.general",
            "selection.selected.scores.chat")),
    Figure("05_synthesize", "{} SFT and {} DPO training examples; the language filter removed {} of the injected "
           "wrong-language and {} of the mixed-language answers and {} of the clean ones; dedup removed {} of the "
           "injected near-duplicates", ("counts.sft.train", "counts.dpo.train", "faults.wrong_language.removed_by_filter",
                                        "faults.mixed_language.removed_by_filter", "faults.clean.removed_by_language",
                                        "faults.near_duplicate.removed_by_filter")),
    # 06 is read from 60 generated answers per model (one moves a share by 0.017), 07 from 240: reruns get 0.05
    Figure("06_align", "held-out task score {} → {} (SFT) → {} (DPO); JSON validity {} after SFT; held-out "
           "preference accuracy {}; medical probes {} → {} (DPO)",
           ("checks.start.task_score", "checks.sft.task_score", "checks.dpo.task_score", "checks.sft.json_validity",
            "results.dpo.heldout.preference_accuracy", "checks.start.probes.medical", "checks.dpo.probes.medical"),
           tolerance=0.05),
    Figure("07_evaluate", "win-rate of DPO over SFT {} (95 % interval {}–{}), length-controlled {}; of the merge over "
           "the instruct model {}", ("win_rates.dpo:sft.win_rate", "win_rates.dpo:sft.win_rate_ci95.0",
                                     "win_rates.dpo:sft.win_rate_ci95.1", "win_rates.dpo:sft.lc_win_rate",
                                     "win_rates.merge:instruct.win_rate"), tolerance=0.05),
)


def lookup(metrics: Any, path: str) -> Any:
    """The value at a dotted ``path`` (list indices as numbers; keys may contain ':')."""
    value = metrics
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _format(value: Any, digits: int) -> str:
    if value is None:  # e.g. a filter's share of injected faults when none were injected
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def figure_rows(run_dir: str | Path) -> list[tuple[str, str]]:
    """(step, sentence) for every figure whose step has metrics in ``run_dir`` and whose values all exist."""
    rows = []
    for fig in FIGURES:
        path = Path(run_dir) / fig.step / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        try:
            values = [lookup(metrics, p) for p in fig.paths]
        except (KeyError, IndexError, TypeError):
            continue
        rows.append((fig.step, fig.text.format(*(_format(v, fig.digits) for v in values))))
    return rows


def figure_table(run_dir: str | Path) -> str:
    """The markdown table of :func:`figure_rows`."""
    lines = ["| step | figure |", "| --- | --- |", *(f"| {step} | {text} |" for step, text in figure_rows(run_dir))]
    return "\n".join(lines)


def readme_block(readme: str) -> str:
    """The generated block of a README (between the markers)."""
    if START not in readme or END not in readme:
        raise ValueError(f"the README has no {START} … {END} block")
    return readme.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(readme_path: str | Path, run_dir: str | Path) -> None:
    """Replace the README's figure block with the table of ``run_dir``."""
    path = Path(readme_path)
    text = path.read_text(encoding="utf-8")
    readme_block(text)  # raises when the markers are missing
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    path.write_text(f"{before}{START}\n{figure_table(run_dir)}\n{END}{after}", encoding="utf-8")


def numbers(text: str) -> list[float]:
    """Every number of a text, in order (thousands separators dropped)."""
    return [float(n.replace(",", "")) for n in NUMBER.findall(text) if n.replace(",", "").replace(".", "")]


def compare(readme_table: str, run_table: str, tolerance: float | None = None) -> list[str]:
    """Where the README's table and a run's differ: other rows or wording, or a number off by more than
    ``tolerance`` (default: each step's own, :attr:`Figure.tolerance`; counts of documents and parameters must match
    exactly). Empty when they agree."""
    tolerances = {fig.step: fig.tolerance for fig in FIGURES}
    problems = []
    readme_rows, run_rows = readme_table.splitlines()[2:], run_table.splitlines()[2:]
    if [NUMBER.sub("#", r) for r in readme_rows] != [NUMBER.sub("#", r) for r in run_rows]:
        return [f"rows differ:\nREADME:\n{readme_table}\nrun:\n{run_table}"]
    for readme_row, run_row in zip(readme_rows, run_rows, strict=True):
        step = readme_row.split("|")[1].strip()
        allowed = tolerance if tolerance is not None else tolerances.get(step, 0.02)
        for a, b in zip(numbers(readme_row), numbers(run_row), strict=True):
            exact = a.is_integer() and b.is_integer() and max(abs(a), abs(b)) >= 100
            if (a != b) if exact else abs(a - b) > allowed:
                problems.append(f"{readme_row}\n  README {a} vs run {b}")
    return problems
