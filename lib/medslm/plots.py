"""Matplotlib figures of the recipe, saved as PNG (and shown inline in notebooks).

Every function takes plain data (lists of dicts as the library returns them) and returns a ``Figure``;
``save_figure`` writes it. The Agg backend is used when no display is available, so batch runs need no GUI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _interactive() -> bool:
    """Whether we run inside IPython/Jupyter (keep its inline backend there)."""
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as a PNG at ``path`` (parent folders created); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path


def plot_merge_tradeoff(
    results: Sequence[Mapping[str, Any]],
    *,
    x: str = "general",
    y: str = "medical",
    selection: Mapping[str, Any] | None = None,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """General (x) vs medical (y) score of a merge sweep: the merges as a line annotated with t, the two parents
    (t=0 and t=1) marked, the selected point circled and the selection's general threshold drawn when given."""
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4.5))
    else:
        fig = ax.figure
    pts = sorted((r for r in results if x in (r.get("scores") or {}) and y in (r.get("scores") or {})),
                 key=lambda r: r["t"])
    if not pts:
        raise ValueError(f"no result has both {x!r} and {y!r} scores")
    xs = [float(r["scores"][x]) for r in pts]
    ys = [float(r["scores"][y]) for r in pts]
    ax.plot(xs, ys, "-", color="0.6", zorder=1)
    ends = [(x_, y_) for r, x_, y_ in zip(pts, xs, ys, strict=True) if not r.get("merged", r["label"] == "merge")]
    if len(ends) == 2:  # the chord: what interpolating the two parents' scores would give
        ax.plot(*zip(*ends, strict=True), "--", color="0.75", lw=1, zorder=0, label="chord (parents' scores mixed)")
    for r, xv, yv in zip(pts, xs, ys, strict=True):
        failed = (r.get("sanity") or {}).get("ok") is False
        if r.get("merged", r["label"] == "merge"):
            ax.scatter([xv], [yv], color="tab:red" if failed else "tab:blue", marker="x" if failed else "o", zorder=2)
            ax.annotate(f"t={r['t']:g}", (xv, yv), textcoords="offset points", xytext=(5, 4), fontsize=8)
        else:
            ax.scatter([xv], [yv], marker="s", s=70, color="tab:green" if r["t"] == 0 else "tab:orange", zorder=3,
                       label=f"{r['label']} (t={r['t']:g})")
    if selection is not None:
        sel = selection["selected"]
        scores = sel.get("scores") or {}
        if x in scores and y in scores:
            ax.scatter([scores[x]], [scores[y]], s=260, facecolors="none", edgecolors="black", linewidths=1.5,
                       zorder=4, label=f"selected (t={sel['t']:g})")
        threshold = (selection.get("thresholds") or {}).get(x)
        if threshold is not None:
            frac = selection["constraints"][x]
            ax.axvline(threshold, color="0.3", linestyle=":", linewidth=1,
                       label=f"{x} threshold ({frac:g} × {selection['reference']['label']})")
    ax.set_xlabel(f"{x} score")
    ax.set_ylabel(f"{y} score")
    ax.set_title(title or f"Merge sweep: {y} vs {x}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


# ---- 00_prepare and shared training/probe figures -------------------------------------------------------------


def plot_corpus_overview(stats: Mapping[str, Any], title: str = "Corpus") -> Any:
    """Documents per kind and language (bars) and the document-length histogram (characters)."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    counts = stats["per_kind_lang"]
    kinds = sorted({k.split("/")[0] for k in counts})
    langs = sorted({k.split("/")[1] for k in counts})
    width = 0.8 / max(len(langs), 1)
    for j, lang in enumerate(langs):
        ax1.bar([i + j * width for i in range(len(kinds))], [counts.get(f"{k}/{lang}", 0) for k in kinds],
                width=width, label=lang)
    ax1.set_xticks([i + width * (len(langs) - 1) / 2 for i in range(len(kinds))], kinds)
    ax1.set_ylabel("documents")
    ax1.set_title(f"{title}: documents per kind and language")
    ax1.legend()
    ax2.hist(stats["lengths"], bins=40, color="tab:gray")
    ax2.set_xlabel("characters per document")
    ax2.set_title("document length")
    fig.tight_layout()
    return fig


def plot_loss_curve(curve: Sequence[tuple[int, float]], title: str = "training loss") -> Any:
    """Loss per logged step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in curve], [v for _, v in curve], marker=".", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_probe_accuracy(scores: Mapping[str, Mapping[str, float]], chance: float = 0.25,
                        title: str = "probe accuracy") -> Any:
    """Grouped bars: for each model (key), its medical/general/chat probe accuracy; chance as a dashed line."""
    plt = _pyplot()
    groups = ["medical", "general", "chat"]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / max(len(scores), 1)
    for j, (name, accs) in enumerate(scores.items()):
        bars = ax.bar([i + j * width for i in range(len(groups))], [accs.get(g, 0.0) for g in groups], width=width,
                      label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.axhline(chance, ls="--", color="gray", lw=1, label=f"chance {chance:.2f}")
    ax.set_xticks([i + width * (len(scores) - 1) / 2 for i in range(len(groups))], groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- 01_annotate / 02_classify ---------------------------------------------------------------------------------


def plot_label_distribution(counts: Mapping[str, int], title: str = "Annotator labels") -> Any:
    """Bar chart of label counts (medical, not_medical, unparseable), each bar annotated with its count."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = list(counts)
    values = [int(counts[k]) for k in names]
    colors = {"medical": "tab:red", "not_medical": "tab:blue", "unparseable": "0.6"}
    bars = ax.bar(names, values, color=[colors.get(k, "tab:gray") for k in names])
    for b, v in zip(bars, values, strict=True):
        ax.annotate(str(v), (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("documents")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion: Mapping[str, Any], title: str = "Confusion matrix",
                          xlabel: str = "predicted", ylabel: str = "gold") -> Any:
    """Heat map of ``{"rows", "columns", "matrix"}`` (as returned by annotate/classify metrics), counts in cells."""
    plt = _pyplot()
    import numpy as np

    m = np.asarray(confusion["matrix"], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * m.shape[1], 1.4 + 1.1 * m.shape[0]))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(m.shape[1]), confusion["columns"])
    ax.set_yticks(range(m.shape[0]), confusion["rows"])
    top = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center",
                    color="white" if top and m[i, j] > top / 2 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_precision_recall(curve: Mapping[str, Sequence[float]], chosen: Mapping[str, Any] | None = None,
                          title: str = "Precision-recall on validation") -> Any:
    """Precision-recall curve (``curve`` from ``choose_threshold``) with the target precision and the chosen
    threshold's operating point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(curve["recall"], curve["precision"], color="tab:blue", label="classifier")
    if chosen is not None:
        ax.axhline(chosen["target_precision"], color="0.4", linestyle=":", label=f"target precision {chosen['target_precision']:g}")
        ax.scatter([chosen["recall"]], [chosen["precision"]], color="tab:red", zorder=3,
                   label=f"threshold {chosen['threshold']:.3f}: P {chosen['precision']:.3f}, R {chosen['recall']:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_score_histogram(scores: Sequence[float], groups: Sequence[str] | None = None, threshold: float | None = None,
                         title: str = "Classifier scores", bins: int = 40) -> Any:
    """Histogram of scores, stacked by group (e.g. gold label or toy-world kind), with the threshold line."""
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.8))
    s = np.asarray(scores, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    if groups is None:
        ax.hist(s, bins=edges, color="tab:blue")
    else:
        g = np.asarray([str(x) for x in groups])
        names = sorted(set(g))
        ax.hist([s[g == k] for k in names], bins=edges, stacked=True, label=names)
        ax.legend(fontsize=8)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_yscale("log")
    ax.set_xlabel("P(medical)")
    ax.set_ylabel("documents")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_synthesis_funnel(funnel: Mapping[str, Any], title: str = "What each filter removed") -> Any:
    """05_synthesize: one stacked bar per (task, language): kept examples and those removed by the teacher
    (failed) and by each filter, in filter order (``funnel`` as :func:`medslm.synthesize.funnel.funnel_counts`)."""
    plt = _pyplot()
    rows = list(funnel["rows"])
    if not rows:
        raise ValueError("the funnel has no rows")
    stages = ["kept", *funnel["stages"]]
    labels = [f"{r['task']} · {r['lang']}" for r in rows]
    fig, (ax, ax_removed) = plt.subplots(1, 2, figsize=(12, 0.32 * len(rows) + 1.6), sharey=True,
                                         gridspec_kw={"width_ratios": [1, 1.4]})
    colors = dict(zip(stages, ["tab:green", "0.4", "tab:red", "tab:orange", "tab:purple", "tab:blue", "tab:brown"],
                      strict=False))
    y = range(len(rows))
    for axis, shown in ((ax, stages), (ax_removed, stages[1:])):
        left = [0] * len(rows)
        for stage in shown:
            values = [r.get(stage, 0) for r in rows]
            if any(values):
                axis.barh(list(y), values, left=left, color=colors[stage], label=stage)
                left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("examples")
    ax.set_title("all examples")
    ax_removed.set_xlabel("examples removed")
    ax_removed.set_title("removed, by the first filter that caught them")
    ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---- 08_failure_analysis ---------------------------------------------------------------------------------------


def plot_failure_rates(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], group: str = "variant",
                       title: str = "Failure rates per variant") -> Any:
    """One panel per column (a failure rate or mean, e.g. ``language_mixed``, ``verbose``, ``invalid_json``), one bar
    per group (variant) annotated with its value; rows as ``report.table().reset_index().to_dict("records")``.
    A missing or NaN value (the detector did not apply) is left out and marked "n/a"."""
    plt = _pyplot()
    if not rows:
        raise ValueError("no rows to plot")
    unknown = [c for c in columns if not any(c in r for r in rows)]
    if unknown:
        raise ValueError(f"no row has column(s) {', '.join(unknown)}; columns: {', '.join(rows[0])}")
    names = [str(r[group]) for r in rows]
    fig, axes = plt.subplots(1, len(columns), figsize=(2.2 + 2.4 * len(columns), 3.4), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        values = [r.get(column) for r in rows]
        shown = [float(v) if v is not None and v == v else 0.0 for v in values]  # v == v is False for NaN
        bars = ax.bar(names, shown, color="tab:red")
        for bar, value in zip(bars, values, strict=True):
            label = "n/a" if value is None or value != value else f"{float(value):.2f}"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8)
        ax.set_title(column, fontsize=9)
        ax.set_ylim(0, max(1.0, max(shown) * 1.15))
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    axes[0][0].set_ylabel("share of answers")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


ALIGNMENT_FIGURES = (("task_score", "held-out task score"), ("json_validity", "JSON validity"),
                     ("wrong_language_share", "wrong/mixed language"), ("length_ratio", "length / reference"))


def plot_alignment_checks(checks: Mapping[str, Mapping[str, Any]], title: str = "quick checks per stage") -> Any:
    """One panel per quick-check figure (task score, JSON validity, wrong-language share, length ratio, medical
    probes), one bar per stage (start → SFT → DPO)."""
    plt = _pyplot()
    figures = [*ALIGNMENT_FIGURES, ("medical_probes", "medical probes")]
    fig, axes = plt.subplots(1, len(figures), figsize=(3.0 * len(figures), 3.2))
    labels = list(checks)
    for ax, (key, name) in zip(axes, figures, strict=True):
        values = [(checks[s].get("probes", {}).get("medical") if key == "medical_probes" else checks[s].get(key))
                  for s in labels]
        bars = ax.bar(labels, [v if v is not None else 0.0 for v in values], color="#4c72b0")
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.2f}" for v in values], fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_scores_with_intervals(rows: Sequence[Mapping[str, Any]], key: str, title: str | None = None) -> Any:
    """One bar per variant for ``key`` (e.g. a benchmark's accuracy) with its 95 % interval (``key_ci95``)."""
    plt = _pyplot()
    rows = [r for r in rows if r.get(key) is not None]
    fig, ax = plt.subplots(figsize=(1.2 * max(len(rows), 3) + 1, 3.4))
    values = [r[key] for r in rows]
    errors = [[v - r.get(f"{key}_ci95", [v, v])[0] for v, r in zip(values, rows, strict=True)],
              [r.get(f"{key}_ci95", [v, v])[1] - v for v, r in zip(values, rows, strict=True)]]
    bars = ax.bar([r["variant"] for r in rows], values, yerr=errors, capsize=4, color="#4c72b0")
    ax.bar_label(bars, fmt="%.2f", fontsize=8, label_type="center", color="white")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(key)
    ax.set_title(title or f"{key} (95 % interval)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_win_rate_forest(win_rates: Mapping[str, Mapping[str, Any]], title: str = "pairwise win-rates") -> Any:
    """A forest plot: each comparison's win-rate (ties count half) and length-controlled win-rate with their 95 %
    bootstrap intervals; 0.5 = no preference."""
    plt = _pyplot()
    pairs = list(win_rates)
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * max(len(pairs), 2) + 1.2))
    for i, pair in enumerate(pairs):
        rates = win_rates[pair]
        for offset, key, marker in ((-0.12, "win_rate", "o"), (0.12, "lc_win_rate", "s")):
            low, high = rates[f"{key}_ci95"]
            ax.errorbar(rates[key], i + offset, xerr=[[rates[key] - low], [high - rates[key]]], fmt=marker,
                        capsize=3, color="#4c72b0" if key == "win_rate" else "#dd8452",
                        label=("win-rate" if key == "win_rate" else "length-controlled") if i == 0 else None)
    ax.axvline(0.5, ls="--", color="gray", lw=1)
    ax.set_yticks(range(len(pairs)), [p.replace(":", " vs ") for p in pairs])
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(model preferred)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
