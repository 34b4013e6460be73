"""Merging (lib/medslm/merge.py) on tiny local models: SLERP/linear maths against independent formulas,
compatibility and memory checks, LoRA adapters, the sweep and its selection rule, and MergeParams. Offline."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SAMPLE_TEXTS, build_tiny_model_dir
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from medslm import merge as mg
from medslm.params import MergeParams, parse_profile

PROMPT = "What is the capital of France?"
ANSWER = "Paris is the capital of France."


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def ref_slerp(t: float, a: torch.Tensor, b: torch.Tensor, dot_threshold: float = 0.9995, eps: float = 1e-8):
    """SLERP as mergekit 0.1.5 defines it, written independently: the whole tensor is one vector; the angle comes
    from the normalised directions; near-parallel (|cos| > 0.9995) falls back to lerp; the coefficients are
    applied to the unnormalised tensors."""
    x, y = a.double().flatten(), b.double().flatten()
    nx, ny = float(x.norm()), float(y.norm())
    nx, ny = (nx if nx > eps else 1.0), (ny if ny > eps else 1.0)
    dot = max(-1.0, min(1.0, float((x / nx) @ (y / ny))))
    if abs(dot) > dot_threshold:
        out = (1 - t) * x + t * y
    else:
        theta = math.acos(dot)
        out = math.sin((1 - t) * theta) / math.sin(theta) * x + math.sin(t * theta) / math.sin(theta) * y
    return out.reshape(a.shape)


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5, what: str = ""):
    diff = float((a.double() - b.double()).abs().max())
    assert diff <= tol, f"{what}: max abs diff {diff}"


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer):
    """Two random tiny Llamas with the same tokenizer (base seed 0, other seed 1) and a third for 3-model merges."""
    root = tmp_path_factory.mktemp("merge_pair")
    return {
        "base": build_tiny_model_dir(root / "base", tiny_tokenizer, seed=0),
        "other": build_tiny_model_dir(root / "other", tiny_tokenizer, seed=1),
        "third": build_tiny_model_dir(root / "third", tiny_tokenizer, seed=2),
        "root": root,
    }


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory, tiny_tokenizer):
    """An 'instruct' tiny model that answers PROMPT, and a 'CPT' model = it plus small noise (same lineage)."""
    from medslm.models import load_model, save_model

    root = tmp_path_factory.mktemp("merge_trained")
    base = build_tiny_model_dir(root / "instruct", tiny_tokenizer, seed=0)
    torch.manual_seed(0)
    model = load_model(base, device="cpu")
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ANSWER}], tokenize=False)
    ids = tiny_tokenizer(text, return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    save_model(model, tiny_tokenizer, base)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02 * p.std())
    cpt = save_model(model, tiny_tokenizer, root / "cpt")
    return {"instruct": base, "cpt": cpt, "root": root}


# --------------------------------------------------------------------------------------------------------------
# SLERP and linear maths
# --------------------------------------------------------------------------------------------------------------


def test_slerp_endpoints_and_midpoint(pair, tmp_path):
    a, b = weights(pair["base"]), weights(pair["other"])
    for t in (0.0, 1.0, 0.5):
        out = mg.merge(mg.slerp_config(pair["base"], pair["other"], t), tmp_path / f"t{t}")
        m = weights(out)
        assert set(m) == set(a)
        for name in a:
            expected = a[name] if t == 0 else b[name] if t == 1 else ref_slerp(0.5, a[name], b[name])
            assert_close(m[name], expected, 1e-5, f"t={t} {name}")
    # both branches were exercised: random matrices (sin formula) and identical RMSNorm weights (lerp fallback)
    assert torch.equal(a["model.norm.weight"], b["model.norm.weight"])
    assert not torch.allclose(m["model.embed_tokens.weight"], 0.5 * (a["model.embed_tokens.weight"] + b["model.embed_tokens.weight"]))
    # the output keeps mergekit's config and model card, and the tokenizer
    cfg = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert cfg["merge_method"] == "slerp" and cfg["base_model"] == str(pair["base"])
    assert "mergekit" in (out / "README.md").read_text()
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()


def test_slerp_gradient_and_module_filters(pair, tmp_path):
    a, b = weights(pair["base"]), weights(pair["other"])
    # a gradient over the 2 layers: layer 0 gets t=0, layer 1 gets t=1; embeddings and final norm the first value
    m = weights(mg.merge(mg.slerp_config(pair["base"], pair["other"], [0.0, 1.0]), tmp_path / "grad"))
    for name in a:
        want = b[name] if ".layers.1." in name else a[name]
        assert_close(m[name], want, 1e-6, name)
    # per-module t: attention from the base, MLP from the other, everything else SLERP at 0.5
    cfg = mg.slerp_config(pair["base"], pair["other"], 0.5, filters={"self_attn": 0.0, "mlp": 1.0})
    assert cfg["parameters"]["t"] == [{"filter": "self_attn", "value": 0.0}, {"filter": "mlp", "value": 1.0},
                                      {"value": 0.5}]
    m = weights(mg.merge(cfg, tmp_path / "filters"))
    for name in a:
        want = a[name] if "self_attn" in name else b[name] if "mlp" in name else ref_slerp(0.5, a[name], b[name])
        assert_close(m[name], want, 1e-5, name)


def test_linear_is_the_weighted_average(pair, tmp_path):
    a, b = weights(pair["base"]), weights(pair["other"])
    cases = {
        "t": (mg.build_config("linear", pair["base"], [pair["other"]], t=0.25), 0.75, 0.25),
        "norm": (mg.linear_config([pair["base"], pair["other"]], [0.3, 0.9]), 0.3 / 1.2, 0.9 / 1.2),
        "raw": (mg.linear_config([pair["base"], pair["other"]], [0.3, 0.9], normalize=False), 0.3, 0.9),
    }
    for name, (cfg, wa, wb) in cases.items():
        assert cfg["base_model"] == str(pair["base"])
        m = weights(mg.merge(cfg, tmp_path / name))
        for k in a:
            assert_close(m[k], wa * a[k] + wb * b[k], 1e-5, f"{name} {k}")
    with pytest.raises(mg.MergeError, match="sum to 0"):
        mg.linear_config([pair["base"], pair["other"]], [1.0, -1.0])


def test_task_vector_methods_seeded_and_mediphi_recipe(pair, tmp_path):
    a, b = weights(pair["base"]), weights(pair["other"])
    # task arithmetic with one model at weight 1 is that model
    m = weights(mg.merge(mg.build_config("task_arithmetic", pair["base"], [pair["other"]]), tmp_path / "ta"))
    for k in a:
        assert_close(m[k], b[k], 1e-5, k)
    cfg = mg.build_config("breadcrumbs", pair["base"], [pair["other"], pair["third"]], weights=[0.5, 0.5],
                          density=0.8, gamma=0.05)
    assert cfg["models"][0]["parameters"] == {"weight": 0.5, "density": 0.8, "gamma": 0.05}
    assert cfg["base_model"] == str(pair["base"])
    # dare_ties is random: the same seed gives the same model, another seed another one
    dare = mg.build_config("dare_ties", pair["base"], [pair["other"], pair["third"]], density=0.5)
    d0 = weights(mg.merge(dare, tmp_path / "dare0", seed=0))
    d0b = weights(mg.merge(dare, tmp_path / "dare0b", seed=0))
    d1 = weights(mg.merge(dare, tmp_path / "dare1", seed=1))
    w = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(d0[w], d0b[w]) and not torch.equal(d0[w], d1[w])
    # MediPhi: each expert SLERPed into the base at t=0.5, then breadcrumbs over the results
    stages = mg.mediphi_recipe(pair["base"], [pair["other"], pair["third"]], tmp_path / "mediphi", density=0.9)
    assert [s["config"]["merge_method"] for s in stages] == ["slerp", "slerp", "breadcrumbs"]
    assert stages[-1]["config"]["base_model"] == str(pair["base"])
    assert [e["model"] for e in stages[-1]["config"]["models"]] == [stages[0]["out"], stages[1]["out"]]
    final = mg.run_recipe(stages, seed=0)
    assert final == tmp_path / "mediphi" / "final" and (final / "mergekit_config.yml").is_file()
    s0 = weights(stages[0]["out"])
    assert_close(s0[w], ref_slerp(0.5, a[w], b[w]), 1e-5, "stage 0")
    assert set(weights(final)) == set(a)


# --------------------------------------------------------------------------------------------------------------
# Compatibility and LoRA adapters
# --------------------------------------------------------------------------------------------------------------


def test_architecture_mismatch_is_a_clear_error(pair, tiny_tokenizer, tmp_path):
    three = build_tiny_model_dir(tmp_path / "three_layers", tiny_tokenizer, seed=3, num_layers=3)
    wide = build_tiny_model_dir(tmp_path / "wide", tiny_tokenizer, seed=3, hidden_size=48, num_heads=2)
    with pytest.raises(mg.IncompatibleModelsError) as e:
        mg.check_compatible([pair["base"], three])
    msg = str(e.value)
    assert "num_hidden_layers" in msg and f"{pair['base']} = 2" in msg and f"{three} = 3" in msg
    assert "architectures differ" in msg
    with pytest.raises(mg.IncompatibleModelsError, match=r"hidden_size: .* = 32, .* = 48"):
        mg.merge(mg.slerp_config(pair["base"], wide, 0.5), tmp_path / "never")
    assert not (tmp_path / "never").exists()
    summary = mg.check_compatible([pair["base"], pair["other"]])
    assert summary["fields"]["num_hidden_layers"] == 2 and summary["tokenizer_vocab_size"] == len(tiny_tokenizer)


def test_vocab_mismatch_suggests_tokenizer_source(pair, tmp_path):
    from medslm.toyworld.tokenizer import train_tokenizer

    other_tok = train_tokenizer([t.upper() for t in SAMPLE_TEXTS] + SAMPLE_TEXTS, vocab_size=450)
    odd = build_tiny_model_dir(tmp_path / "odd_vocab", other_tok, seed=4)
    with pytest.raises(mg.IncompatibleModelsError) as e:
        mg.check_compatible([pair["base"], odd])
    msg = str(e.value)
    assert "vocab_size" in msg and "tokenizer vocab" in msg
    assert "tokenizer_source='base'" in msg and "{source: union}" in msg
    assert {d["field"] for d in e.value.differences} == {"vocab_size", "tokenizer vocab"}
    # with a tokenizer source mergekit aligns the embeddings: the check passes and the merge runs
    assert mg.check_compatible([pair["base"], odd], tokenizer_source="base")["notes"]
    cfg = mg.slerp_config(pair["base"], odd, 0.5, tokenizer_source="base")
    assert cfg["tokenizer"] == {"source": "base"}
    out = mg.merge(cfg, tmp_path / "aligned")
    base_rows = weights(pair["base"])["model.embed_tokens.weight"].shape[0]
    assert weights(out)["model.embed_tokens.weight"].shape[0] == base_rows


def test_lora_adapter_is_merged_in_full_precision_first(pair, tmp_path):
    from peft import LoraConfig, get_peft_model

    from medslm.models import load_model

    model = load_model(pair["base"], device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    expected = {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}
    assert mg.is_lora_adapter(adapter) and not mg.is_lora_adapter(pair["base"])
    with pytest.raises(mg.MergeError, match="LoRA adapter"):
        mg.check_compatible([pair["base"], adapter])
    # SLERP at t=1 with the adapter as the other model gives base+adapter, merged in float32
    out = mg.merge(mg.slerp_config(pair["base"], adapter, 1.0), tmp_path / "with_adapter", lora_cache_dir=tmp_path / "cache")
    m = weights(out)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert m[q].dtype == torch.float32
    assert_close(m[q], expected[q], 1e-5, q)
    assert not torch.allclose(m[q], weights(pair["base"])[q])
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the merged copy is cached


# --------------------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------------------


def test_memory_estimate_and_refusal(pair, tmp_path, monkeypatch):
    dirs = [pair["base"], pair["other"]]
    one = mg.safetensors_summary(pair["base"])
    assert one["bytes"] == sum(v.numel() * v.element_size() for v in weights(pair["base"]).values())
    est = mg.estimate_merge_memory(dirs, available_bytes=64 * 2**30)
    assert est["fits"] and est["inputs_bytes"] == 2 * one["bytes"]
    assert est["needed_bytes"] == est["overhead_bytes"] + est["inputs_bytes"] + est["shard_bytes"] + est["working_bytes"]
    assert 3 * one["bytes"] <= est["needed_bytes"] - est["overhead_bytes"] <= 5 * one["bytes"]
    assert est["out_shard_size"] == 5_000_000_000 and "needs" in est["summary"]
    assert mg.estimate_merge_memory(dirs, dtype="bfloat16", available_bytes=2**34)["output_bytes"] == one["bytes"] // 2
    small = mg.estimate_merge_memory(dirs, available_bytes=100 * 2**20)
    assert not small["fits"]
    with pytest.raises(mg.MergeMemoryError, match=r"needs about .* but only 100 MiB is available.*Try: smaller output shards"):
        mg.check_memory(small)
    with pytest.raises(mg.MergeMemoryError):
        mg.merge(mg.slerp_config(*dirs, 0.5), tmp_path / "no_room", available_bytes=100 * 2**20)
    assert not (tmp_path / "no_room").exists()
    # a 7B-sized fake: the largest shard size that fits is chosen, else a refusal
    monkeypatch.setattr(mg, "safetensors_summary",
                        lambda d: {"bytes": 14 * 10**9, "params": 7 * 10**9, "largest_tensor": 500 * 10**6})
    gb = 10**9
    est = mg.estimate_merge_memory(dirs, dtype="bfloat16", overhead_bytes=0, available_bytes=28 * gb + 6 * gb + 1 * gb)
    assert est["fits"] and est["out_shard_size"] == 1_000_000_000
    est = mg.estimate_merge_memory(dirs, dtype="bfloat16", overhead_bytes=0, available_bytes=20 * gb)
    assert not est["fits"] and est["out_shard_size"] == 100_000_000
    est = mg.estimate_merge_memory(dirs, device="cuda", available_bytes=10**12, available_vram_bytes=10**9)
    assert est["fits_ram"] and not est["fits_vram"] and not est["fits"]


# --------------------------------------------------------------------------------------------------------------
# Sanity check, sweep, selection, plot
# --------------------------------------------------------------------------------------------------------------


def test_sanity_check_flags_nan_and_degenerate_generation(pair, trained_pair, tmp_path):
    ok = mg.sanity_check(trained_pair["instruct"])
    assert ok["ok"] and ok["finite"] and ok["text"].strip().startswith("Paris"), ok
    broken = Path(shutil.copytree(trained_pair["instruct"], tmp_path / "nan"))
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    bad = mg.sanity_check(broken)
    assert not bad["ok"] and not bad["finite"]
    assert bad["nonfinite"] == ["model.layers.1.mlp.up_proj.weight"] and "non-finite" in bad["problems"][0]
    # an untrained random model answers with one token repeated
    rnd = mg.sanity_check(pair["base"])
    assert not rnd["ok"] and rnd["finite"], rnd


def fake_scores(t: float) -> dict[str, float]:
    """Medical knowledge grows with t; general and chat fall (general faster)."""
    return {"medical": 0.3 + 0.6 * t, "general": 0.9 - 0.2 * t, "chat": 0.8 - 0.08 * t}


def test_sweep_selection_and_plot(trained_pair, tmp_path):
    from medslm.plots import plot_merge_tradeoff, save_figure
    from medslm.rundir import RunDir, read_json

    rd = RunDir(tmp_path / "run")
    ts = [0.25, 0.5, 0.75]
    t_of = {str(trained_pair["instruct"]): 0.0, str(trained_pair["cpt"]): 1.0}
    t_of.update({str(rd.merge.sweep / mg.point_name(t)): t for t in ts})
    seen = []

    def evaluate_fn(model, tokenizer):
        seen.append(model.name_or_path)
        return fake_scores(t_of[str(model.name_or_path)])

    results = mg.sweep(trained_pair["instruct"], trained_pair["cpt"], ts, rd.merge.sweep, evaluate_fn, progress=False)
    assert [r["t"] for r in results] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [r["label"] for r in results] == ["instruct", "merge", "merge", "merge", "cpt"]
    assert [r["merged"] for r in results] == [False, True, True, True, False]
    assert all(r["sanity"]["ok"] for r in results), [r["sanity"] for r in results]
    assert len(seen) == 5 and (rd.merge.sweep / "t_0.25" / "mergekit_config.yml").is_file()
    assert read_json(rd.merge.sweep / "sweep.json")[2]["scores"] == pytest.approx(fake_scores(0.5))
    rows = mg.sweep_table(results)
    assert rows[1]["medical"] == pytest.approx(0.45) and rows[1]["sanity_ok"] and rows[1]["generation"].strip().startswith("Paris")

    # general >= 0.9 x 0.9 holds for t <= 0.45 and chat >= 0.9 x 0.8 for all t: t=0.25 has the most medical
    sel = mg.select_merge(results, min_general_fraction=0.9, min_chat_fraction=0.9)
    assert sel["selected"]["t"] == 0.25 and not sel["fallback"] and sel["qualified"] == [0.25]
    assert "maximize medical subject to general >= 0.9" in sel["rule"]
    assert sel["thresholds"]["general"] == pytest.approx(0.81)
    # loose constraints: the CPT model itself wins
    loose = mg.select_merge(results, min_general_fraction=0.5, min_chat_fraction=0.5)
    assert loose["selected"]["label"] == "cpt" and loose["qualified"] == [0.25, 0.5, 0.75, 1.0]
    # strict constraints: nothing qualifies -> the smallest shortfall, with a note
    strict = mg.select_merge(results, min_general_fraction=0.95, min_chat_fraction=0.95)
    assert strict["fallback"] and strict["selected"]["t"] == 0.25 and "no candidate meets" in strict["note"]

    selected = mg.save_selection(sel, rd.merge.selected)
    info = read_json(selected / "selection.json")
    assert info["selected"]["t"] == 0.25 and info["rule"] == sel["rule"] and info["source_dir"].endswith("t_0.25")
    assert (selected / "model.safetensors").is_file() and (selected / "mergekit_config.yml").is_file()
    assert mg.sanity_check(selected)["ok"]

    fig = plot_merge_tradeoff(results, selection=sel)
    png = save_figure(fig, rd.merge.figure("merge_tradeoff"))
    assert png.read_bytes()[:4] == b"\x89PNG"

    # a second sweep over the same points reuses the finished merges
    mtime = (rd.merge.sweep / "t_0.5" / "model.safetensors").stat().st_mtime_ns
    mg.sweep(trained_pair["instruct"], trained_pair["cpt"], [0.5], rd.merge.sweep, lambda m, t: fake_scores(0.5),
             progress=False)
    assert (rd.merge.sweep / "t_0.5" / "model.safetensors").stat().st_mtime_ns == mtime


def test_selection_skips_points_that_failed_sanity():
    results = [
        {"t": 0.0, "label": "instruct", "model_dir": "i", "scores": fake_scores(0.0), "sanity": {"ok": True}},
        {"t": 0.25, "label": "merge", "model_dir": "a", "scores": fake_scores(0.25), "sanity": {"ok": True}},
        {"t": 0.5, "label": "merge", "model_dir": "b", "scores": {"medical": 1.0, "general": 1.0, "chat": 1.0},
         "sanity": {"ok": False, "problems": ["non-finite weights"]}},
    ]
    sel = mg.select_merge(results, min_general_fraction=0.9, min_chat_fraction=0.9)
    assert sel["selected"]["model_dir"] == "a" and "t=0.5" in sel["note"]
    results[1]["sanity"] = {"ok": False}
    sel = mg.select_merge(results)
    assert sel["fallback"] and sel["selected"]["label"] == "instruct"


def test_select_nearest_without_scores():
    results = [
        {"t": 0.0, "label": "instruct", "merged": False, "model_dir": "i", "scores": {}, "sanity": {"ok": True}},
        {"t": 0.4, "label": "merge", "merged": True, "model_dir": "a", "scores": {}, "sanity": {"ok": True}},
        {"t": 0.5, "label": "merge", "merged": True, "model_dir": "b", "scores": {}, "sanity": {"ok": False}},
        {"t": 0.7, "label": "merge", "merged": True, "model_dir": "c", "scores": {}, "sanity": {"ok": True}},
        {"t": 1.0, "label": "cpt", "merged": False, "model_dir": "o", "scores": {}, "sanity": {"ok": True}},
    ]
    sel = mg.select_nearest(results, 0.5, "no probes")
    assert sel["selected"]["model_dir"] == "a" and sel["fallback"]  # 0.5 failed its sanity check; 0.4 is nearer
    assert "no probes" in sel["note"] and "t=0.5" in sel["rule"]
    with pytest.raises(mg.MergeError, match="sanity"):
        mg.select_nearest(results[:1] + results[2:3], 0.5, "x")


def test_evaluate_point_matches_the_sweep_format(trained_pair):
    r = mg.evaluate_point(trained_pair["cpt"], lambda m, t: fake_scores(1.0), t=1.0, label="cpt", merged=False)
    assert set(r) == {"t", "label", "merged", "model_dir", "scores", "sanity", "seconds"}
    assert r["scores"] == fake_scores(1.0) and r["sanity"]["ok"] and not r["merged"]


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------


def test_merge_params_validation(pair):
    p = MergeParams()
    assert p.method == "slerp" and p.sweep == [0.5, 0.6, 0.7, 0.8, 0.9] and p.dtype == "float32"
    assert MergeParams(sweep=[0.8, "0.2"]).sweep == [0.2, 0.8]
    assert MergeParams(t="5e-1").t == 0.5
    for bad in ({"t": 1.5}, {"t_list": [0.5]}, {"t_list": [0.0, 2.0]}, {"module_t": {"mlp": [0.1, 1.2]}},
                {"sweep": [0.2, 0.2]}, {"sweep": [-0.1]}, {"method": "frankenmerge"}, {"dtype": "fp8"},
                {"tokenizer_source": "model"}, {"experts": ["x"]}, {"method": "ties", "experts": ["x"], "weights": [1.0]},
                {"method": "model_stock"}, {"out_shard_size": "5 GB"}, {"min_general_fraction": 1.2}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            MergeParams(**bad)
    ok = MergeParams(method="ties", experts=["e1"], weights=[0.7, 0.3], module_t={"self_attn": [0, 0.5, 1]},
                     out_shard_size="500M")
    assert mg.parse_size(ok.out_shard_size) == 500_000_000
    cfg = mg.config_from_params(ok, pair["base"], [pair["other"], pair["third"]])
    assert cfg["merge_method"] == "ties" and [e["parameters"]["weight"] for e in cfg["models"]] == [0.7, 0.3]
    cfg = mg.config_from_params(MergeParams(t_list=[0.0, 1.0]), pair["base"], [pair["other"]])
    assert cfg["parameters"]["t"] == [0.0, 1.0] and yaml.safe_load(mg.config_yaml(cfg)) == cfg
    prof = parse_profile({"run": {}, "steps": {"merge": {"method": "breadcrumbs", "density": "9e-1"}}})
    assert prof.steps["merge"].density == 0.9


def test_probe_evaluator_and_resolve_parents(pair, tmp_path):
    from medslm.models import load_model, load_tokenizer
    from medslm.rundir import RunDir

    probes = [
        {"context": "Metformin treats", "choices": ["diabetes", "asthma"], "gold": 0, "domain": "medical", "lang": "en",
         "relation": "drug_indication"},
        {"context": "The capital of France is", "choices": ["Paris", "Rome"], "gold": 0, "domain": "general",
         "lang": "en", "relation": "capital"},
    ]
    heldout = [{"domain": "medical", "text": "Metformin is used to treat type 2 diabetes."},
               {"domain": "general", "text": "Paris is the capital of France."}]
    scores = mg.probe_evaluator(probes, heldout)(load_model(pair["base"], device="cpu"), load_tokenizer(pair["base"]))
    assert {"medical", "general", "ppl_medical", "ppl_general"} <= set(scores)
    assert 0 <= scores["medical"] <= 1 and scores["ppl_general"] > 1

    rd = RunDir(tmp_path / "run")
    with pytest.raises(mg.MergeError, match="run 00_prepare"):
        mg.resolve_parents(rd, MergeParams())
    shutil.copytree(pair["base"], rd.prepare.model)
    shutil.copytree(pair["other"], rd.cpt.model)
    assert mg.resolve_parents(rd, MergeParams()) == (str(rd.prepare.model), str(rd.cpt.model))
    assert mg.resolve_parents(rd, MergeParams(instruct="org/instruct-model"))[0] == "org/instruct-model"
