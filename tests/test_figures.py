"""The README's figure table: generated from metrics files, written between its markers, compared with tolerance."""

import pytest

from medslm.figures import compare, figure_table, readme_block, write_readme
from medslm.rundir import write_json


def _run(tmp_path, general=0.97, documents=1200):
    write_json(tmp_path / "00_prepare" / "metrics.json", {"model": {"parameters": 688768}, "probes": {
        "general": general, "chat": 0.977, "medical": 0.28}})
    write_json(tmp_path / "01_annotate" / "metrics.json", {"annotation": {
        "gold": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "n": documents},
        "gold_held_out": {"precision": 0.52, "recall": 0.51, "f1": 0.514, "n": 240}}})
    return tmp_path


def test_table_from_metrics_and_written_between_the_markers(tmp_path):
    run = _run(tmp_path / "run")
    table = figure_table(run)
    assert "| 00_prepare | base model (688,768 parameters): general probes 0.97, chat probes 0.98" in table
    assert "on 1,200 documents" in table and "03_cpt" not in table  # steps without metrics are left out
    assert "on the 240 documents of held-out sentence families precision 0.52, recall 0.51, F1 0.51" in table
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- figures:start -->\nold\n<!-- figures:end -->\n\nafter\n")
    write_readme(readme, run)
    text = readme.read_text()
    assert readme_block(text) == table and text.startswith("# x\n") and text.endswith("\nafter\n")


def test_compare_allows_small_drift_but_not_other_counts_or_rows(tmp_path):
    table = figure_table(_run(tmp_path / "a"))
    assert compare(table, figure_table(_run(tmp_path / "b", general=0.985)), tolerance=0.02) == []
    assert compare(table, figure_table(_run(tmp_path / "c", general=0.93)), tolerance=0.02)  # 0.04 off
    assert compare(table, figure_table(_run(tmp_path / "d", documents=1201)), tolerance=0.02)  # counts exact
    with pytest.raises(ValueError, match="no <!-- figures:start -->"):
        readme_block("no markers here")


def test_a_missing_figure_reads_n_a():
    """A filter's share of injected faults is None when none were injected (a small grid): the table says n/a."""
    from medslm.figures import _format

    assert _format(None, 2) == "n/a" and _format(0.5, 2) == "0.50" and _format(688768, 2) == "688,768"
