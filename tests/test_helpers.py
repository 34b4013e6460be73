"""Small helpers: corpus/tokenizer statistics, the notebook start/finish contract, figures."""

import pytest

from medslm import plots
from medslm.notebook import finish_step, start_step
from medslm.params import PrepareParams
from medslm.rundir import read_json
from medslm.stats import corpus_stats, tokenizer_stats


def test_corpus_stats():
    recs = [{"text": "abc", "lang": "de", "kind": "medical"}, {"text": "abcde", "lang": "en", "kind": "general"},
            {"text": "a", "lang": "de", "kind": "general"}]
    s = corpus_stats(recs)
    assert s["documents"] == 3 and s["characters"] == 9 and s["mean_chars"] == 3
    assert s["per_lang"] == {"de": 2, "en": 1}
    assert s["per_kind_lang"] == {"general/de": 1, "general/en": 1, "medical/de": 1}


def test_tokenizer_stats(tiny_tokenizer):
    s = tokenizer_stats(tiny_tokenizer, [{"text": "Paris is the capital of France.", "lang": "en"}])
    assert s["vocab_size"] == len(tiny_tokenizer)
    assert 1 < s["per_lang"]["en"]["chars_per_token"] < 31


def test_start_step_validates_and_finish_writes_metrics(tmp_path):
    ns = {name: f.get_default(call_default_factory=True) for name, f in PrepareParams.model_fields.items()}
    ns.update(run_dir=str(tmp_path / "run"), profile="no-such-profile.yaml", n_documents=5)
    ctx = start_step("prepare", ns)
    assert ctx.params.n_documents == 5 and ctx.dir.path.is_dir() and ctx.run.seed == 0
    finish_step(ctx, {"probes": {"general": 0.9}})
    m = read_json(ctx.dir.metrics)
    assert m["step"] == "prepare" and m["params"]["n_documents"] == 5 and m["probes"]["general"] == 0.9
    with pytest.raises(ValueError, match="n_documents"):
        start_step("prepare", {**ns, "n_documents": -1})


def test_figures_are_written(tmp_path):
    stats = corpus_stats([{"text": "x" * n, "lang": "de", "kind": "general"} for n in range(1, 30)])
    paths = [
        plots.save_figure(plots.plot_corpus_overview(stats), tmp_path / "corpus"),
        plots.save_figure(plots.plot_loss_curve([(1, 3.0), (2, 2.0)]), tmp_path / "loss.png"),
        plots.save_figure(plots.plot_probe_accuracy({"a": {"medical": 0.3, "general": 0.9, "chat": 0.8}}),
                          tmp_path / "probes.png"),
    ]
    for p in paths:
        assert p.suffix == ".png" and p.read_bytes()[:4] == b"\x89PNG"
