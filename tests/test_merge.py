"""Merging (lib/medslm/merge/) on tiny local models, as mergekit's own tests do: every method merged and checked
against an independent computation, compatibility, memory and safetensors checks, LoRA adapters resolved once,
the sanity gate, the selection rule's promises, and the recipe end to end on a small run folder. Offline."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SAMPLE_TEXTS, build_tiny_model_dir
from mergekit.config import MergeConfiguration
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from medslm import merge as mg
from medslm.params import MergeParams, parse_profile

PROMPT = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
NORM = "model.norm.weight"
UP = "model.layers.0.mlp.up_proj.weight"


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def variant(src: Path, dst: Path, changes: dict[str, torch.Tensor]) -> Path:
    """A copy of model folder ``src`` with some tensors replaced."""
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    tensors.update(changes)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def ref_slerp(t: float, a: torch.Tensor, b: torch.Tensor, dot_threshold: float = 0.9995, eps: float = 1e-8):
    """SLERP as mergekit 0.1.5 defines it, written independently: the whole tensor is one vector; near-parallel
    (|cos| > 0.9995) falls back to lerp; the coefficients are applied to the unnormalised tensors."""
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


def keep_top(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES trimming: keep the int(density·n) largest magnitudes."""
    if density >= 1:
        return delta
    flat = delta.flatten()
    mask = torch.zeros_like(flat)
    mask[flat.abs().topk(max(1, int(density * flat.numel()))).indices] = 1
    return (flat * mask).reshape(delta.shape)


def keep_breadcrumbs(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Breadcrumbs: drop the int(gamma·n) largest magnitudes and the smallest, keeping int(density·n)."""
    if density >= 1:
        return delta
    flat = delta.flatten()
    n, target = flat.numel(), int(density * flat.numel())
    bottom = max(0, n - target - int(gamma * n))
    order = flat.abs().sort().indices
    mask = torch.zeros_like(flat)
    mask[order[bottom: bottom + target]] = 1
    return (flat * mask).reshape(delta.shape)


def ref_task_vectors(base, models, weights_, *, trim=lambda d: d, elect=False, normalize=False):
    """base + Σ wᵢ·trim(mᵢ − base), with TIES sign election (the sign of the weighted sum; entries of the other sign
    or zero dropped, then divided by the weights that remain) when ``elect``; float64 accumulation."""
    deltas = [w * trim(m.float() - base.float()).double() for m, w in zip(models, weights_, strict=True)]
    if elect:
        elected = torch.where(sum(deltas) >= 0, 1.0, -1.0).double()
        masks = [(d.sign() == elected).double() for d in deltas]
        mixed = sum(d * k for d, k in zip(deltas, masks, strict=True))
        divisor = sum(w * k for w, k in zip(weights_, masks, strict=True))
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    else:
        mixed, divisor = sum(deltas), torch.tensor(float(sum(weights_)))
    return base.double() + (mixed / divisor if normalize else mixed)


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5, what: str = ""):
    diff = float((a.double() - b.double()).abs().max())
    assert diff <= tol, f"{what}: max abs diff {diff}"


def assert_all(merged: dict, expected_fn, tol: float = 1e-5):
    for name, tensor in merged.items():
        assert_close(tensor, expected_fn(name), tol, name)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer):
    """Three random tiny Llamas with one tokenizer (seeds 0, 1, 2)."""
    root = tmp_path_factory.mktemp("merge_pair")
    return {"base": build_tiny_model_dir(root / "base", tiny_tokenizer, seed=0),
            "other": build_tiny_model_dir(root / "other", tiny_tokenizer, seed=1),
            "third": build_tiny_model_dir(root / "third", tiny_tokenizer, seed=2), "root": root}


def train_to_answer(model_dir: Path, tokenizer, reply: str, out: Path) -> Path:
    from medslm.models import load_model, save_model

    torch.manual_seed(0)
    model = load_model(model_dir, device="cpu")
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}, {"role": "assistant", "content": reply}],
                                         tokenize=False)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return save_model(model, tokenizer, out)


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory, tiny_tokenizer):
    """An 'instruct' tiny model that answers PROMPT, and a 'CPT' model = it plus small noise (same lineage)."""
    from medslm.models import load_model, save_model

    root = tmp_path_factory.mktemp("merge_trained")
    base = build_tiny_model_dir(root / "random", tiny_tokenizer, seed=0)
    instruct = train_to_answer(base, tiny_tokenizer, ANSWER, root / "instruct")
    model = load_model(instruct, device="cpu")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02 * p.std())
    return {"instruct": instruct, "cpt": save_model(model, tiny_tokenizer, root / "cpt"), "random": base, "root": root}


# --------------------------------------------------------------------------------------------------------------
# Every method merged, checked against an independent computation
# --------------------------------------------------------------------------------------------------------------


def test_slerp_endpoints_midpoint_gradient_and_filters(pair, tmp_path):
    a, b = weights(pair["base"]), weights(pair["other"])
    for t in (0.0, 1.0, 0.5):
        config = mg.slerp_config(pair["base"], pair["other"], t)
        assert isinstance(config, MergeConfiguration)
        out = mg.run_mergekit(config, tmp_path / f"t{t}")
        assert_all(weights(out), lambda n, t=t: a[n] if t == 0 else b[n] if t == 1 else ref_slerp(0.5, a[n], b[n]))
    # both branches were exercised: random matrices (sin formula) and identical RMSNorm weights (lerp fallback)
    assert torch.equal(a[NORM], b[NORM])
    assert not torch.allclose(weights(out)[UP], 0.5 * (a[UP] + b[UP]))
    card = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert card["merge_method"] == "slerp" and card["base_model"] == str(pair["base"])
    assert "mergekit" in (out / "README.md").read_text() and (out / "tokenizer.json").is_file()
    # a gradient over the 2 layers (layer 0: t=0, layer 1: t=1; embeddings and final norm the first value)
    grad = weights(mg.run_mergekit(mg.slerp_config(pair["base"], pair["other"], [0.0, 1.0]), tmp_path / "grad"))
    assert_all(grad, lambda n: b[n] if ".layers.1." in n else a[n], 1e-6)
    # per-module t: attention from the base, MLP from the other, everything else SLERP at 0.5
    config = mg.slerp_config(pair["base"], pair["other"], 0.5, filters={"self_attn": 0.0, "mlp": 1.0})
    assert yaml.safe_load(config.to_yaml())["parameters"]["t"] == [{"filter": "self_attn", "value": 0.0},
                                                                   {"filter": "mlp", "value": 1.0}, {"value": 0.5}]
    filtered = weights(mg.run_mergekit(config, tmp_path / "filters"))
    assert_all(filtered, lambda n: a[n] if "self_attn" in n else b[n] if "mlp" in n else ref_slerp(0.5, a[n], b[n]))


def test_linear_is_the_weighted_average(pair, tmp_path):
    a, b = weights(pair["base"]), weights(pair["other"])
    cases = {"t": (mg.build_config("linear", pair["base"], [pair["other"]], t=0.25), 0.75, 0.25),
             "norm": (mg.linear_config([pair["base"], pair["other"]], [0.3, 0.9]), 0.3 / 1.2, 0.9 / 1.2),
             "raw": (mg.linear_config([pair["base"], pair["other"]], [0.3, 0.9], normalize=False), 0.3, 0.9)}
    for name, (config, wa, wb) in cases.items():
        assert_all(weights(mg.run_mergekit(config, tmp_path / name)), lambda n, wa=wa, wb=wb: wa * a[n] + wb * b[n])
    with pytest.raises(mg.MergeError, match="sum to 0"):
        mg.linear_config([pair["base"], pair["other"]], [1.0, -1.0])


def test_task_arithmetic_is_base_plus_weighted_task_vectors(pair, tmp_path):
    base, m1, m2 = (weights(pair[k]) for k in ("base", "other", "third"))
    config = mg.build_config("task_arithmetic", pair["base"], [pair["other"], pair["third"]], weights=[0.6, 0.3])
    merged = weights(mg.run_mergekit(config, tmp_path / "ta"))
    assert_all(merged, lambda n: base[n].double() + 0.6 * (m1[n].double() - base[n]) + 0.3 * (m2[n].double() - base[n]))
    assert not torch.allclose(merged[UP], 0.5 * (m1[UP] + m2[UP]), atol=1e-3)  # not a plain average


def test_ties_sign_election_on_a_hand_made_pair(pair, tmp_path):
    base = weights(pair["base"])
    d1 = torch.zeros_like(base[NORM])
    d2 = torch.zeros_like(base[NORM])
    d1[:5] = torch.tensor([0.3, 0.1, 0.2, 0.0, -0.2])
    d2[:5] = torch.tensor([-0.1, -0.3, 0.4, 0.2, -0.4])
    m1 = variant(pair["base"], tmp_path / "m1", {NORM: base[NORM] + d1})
    m2 = variant(pair["base"], tmp_path / "m2", {NORM: base[NORM] + d2})
    merged = weights(mg.run_mergekit(mg.build_config("ties", pair["base"], [m1, m2], density=1.0), tmp_path / "ties"))
    # by hand: the elected sign is the sign of d1 + d2; entries of the other sign (or zero) are dropped; the rest are
    # averaged over the models that kept them: 0.3 (only d1), -0.3 (only d2), (0.2+0.4)/2, 0.2 (d1 is 0), -0.6/2
    expected = torch.zeros_like(d1)
    expected[:5] = torch.tensor([0.3, -0.3, 0.3, 0.2, -0.3])
    assert_close(merged[NORM] - base[NORM], expected, 1e-6, "ties deltas")
    ta = weights(mg.run_mergekit(mg.build_config("task_arithmetic", pair["base"], [m1, m2]), tmp_path / "ta"))
    assert_close(ta[NORM] - base[NORM], d1 + d2, 1e-6, "negative control: task arithmetic sums")
    assert_all({k: v for k, v in merged.items() if k != NORM}, lambda n: base[n], 0.0)


def test_ties_and_breadcrumbs_trimming_against_reference(pair, tmp_path):
    base, m1, m2 = (weights(pair[k]) for k in ("base", "other", "third"))
    models = [pair["other"], pair["third"]]
    ties = weights(mg.run_mergekit(mg.build_config("ties", pair["base"], models, weights=[0.7, 0.5], density=0.4),
                                   tmp_path / "ties"))
    assert_all(ties, lambda n: ref_task_vectors(base[n], [m1[n], m2[n]], [0.7, 0.5], elect=True, normalize=True,
                                                trim=lambda d: keep_top(d, 0.4)))
    crumbs = lambda d: keep_breadcrumbs(d, 0.5, 0.1)  # noqa: E731
    bc = weights(mg.run_mergekit(mg.build_config("breadcrumbs", pair["base"], models, density=0.5, gamma=0.1),
                                 tmp_path / "breadcrumbs"))
    assert_all(bc, lambda n: ref_task_vectors(base[n], [m1[n], m2[n]], [1.0, 1.0], trim=crumbs))
    bct = weights(mg.run_mergekit(mg.build_config("breadcrumbs_ties", pair["base"], models, density=0.5, gamma=0.1),
                                  tmp_path / "breadcrumbs_ties"))
    assert_all(bct, lambda n: ref_task_vectors(base[n], [m1[n], m2[n]], [1.0, 1.0], trim=crumbs, elect=True))
    assert not torch.allclose(bc[UP], bct[UP])  # the sign election changed something


def test_dare_ties_and_della_are_seeded_sparse_and_rescaled(pair, tmp_path):
    base, m1, m2 = (weights(pair[k]) for k in ("base", "other", "third"))
    models = [pair["other"], pair["third"]]
    # density 1 drops nothing: dare_ties = TIES sign election without normalising, della = TIES with it
    dare_full = weights(mg.run_mergekit(mg.build_config("dare_ties", pair["base"], models, density=1.0), tmp_path / "df"))
    assert_all(dare_full, lambda n: ref_task_vectors(base[n], [m1[n], m2[n]], [1.0, 1.0], elect=True))
    della_full = weights(mg.run_mergekit(mg.build_config("della", pair["base"], models, density=1.0), tmp_path / "lf"))
    assert_all(della_full, lambda n: ref_task_vectors(base[n], [m1[n], m2[n]], [1.0, 1.0], elect=True, normalize=True))
    emb = "model.embed_tokens.weight"
    delta = (m1[emb] - base[emb]).double()
    for method, extra in (("dare_ties", {}), ("della", {"epsilon": 0.1})):
        config = mg.build_config(method, pair["base"], [pair["other"]], density=0.5, **extra)
        runs = [weights(mg.run_mergekit(config, tmp_path / f"{method}{i}", seed=s))[emb].double() - base[emb]
                for i, s in enumerate((0, 0, 1))]
        assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2]), f"{method}: seeded"
        kept = runs[0] != 0
        assert 0.45 <= float(kept.double().mean()) <= 0.55, f"{method}: about half of {delta.numel()} entries kept"
        # what is kept is the original difference rescaled so that the L1 norm of the task vector is preserved
        scale = float(delta.abs().sum() / delta[kept].abs().sum())
        assert_close(runs[0][kept], delta[kept] * scale, 1e-5, f"{method} rescaled")
        assert float(runs[0].abs().sum()) == pytest.approx(float(delta.abs().sum()), rel=1e-5)


def test_model_stock_against_its_formula(pair, tmp_path):
    base, m1, m2 = (weights(pair[k]) for k in ("base", "other", "third"))
    merged = weights(mg.run_mergekit(mg.model_stock_config(pair["base"], [pair["other"], pair["third"]]),
                                     tmp_path / "stock"))

    def expected(name: str) -> torch.Tensor:
        w0, w1, w2 = base[name].double().flatten(), m1[name].double().flatten(), m2[name].double().flatten()
        o1, o2 = w1 - w0, w2 - w0
        if float(o1.norm()) == 0:  # identical norms: nothing to interpolate
            return base[name]
        cos = float(o1 @ o2 / (o1.norm() * o2.norm()))
        t = 2 * cos / (1 + cos)
        return (t * (w1 + w2) / 2 + (1 - t) * w0).reshape(base[name].shape)

    assert_all(merged, expected)
    with pytest.raises(mg.MergeError, match="at least two"):
        mg.model_stock_config(pair["base"], [pair["other"]])


def test_mediphi_stages_slerp_then_breadcrumbs(pair, tmp_path):
    a, b = weights(pair["base"]), weights(pair["other"])
    stages = mg.mediphi_stages(MergeParams(method="mediphi", experts=["x"], density=0.9), pair["base"],
                               [pair["other"], pair["third"]], tmp_path / "mediphi")
    assert [s.config.merge_method for s in stages] == ["slerp", "slerp", "breadcrumbs"]
    assert [m.model.model.path for m in stages[-1].config.models] == [str(stages[0].out), str(stages[1].out)]
    final = mg.run_stages(stages, seed=0)
    assert final == tmp_path / "mediphi" / "final" and (final / "mergekit_config.yml").is_file()
    assert_close(weights(stages[0].out)[UP], ref_slerp(0.5, a[UP], b[UP]), 1e-5, "stage 0")
    mtime = (final / "model.safetensors").stat().st_mtime_ns
    mg.run_stages(stages, seed=0)  # finished stages are reused
    assert (final / "model.safetensors").stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------------------------------------------
# Inputs: compatibility, safetensors only, LoRA adapters resolved once, memory
# --------------------------------------------------------------------------------------------------------------


def test_architecture_and_vocab_mismatch_are_clear_errors(pair, tiny_tokenizer, tmp_path):
    from medslm.toyworld.tokenizer import train_tokenizer

    three = build_tiny_model_dir(tmp_path / "three_layers", tiny_tokenizer, seed=3, num_layers=3)
    with pytest.raises(mg.IncompatibleModelsError) as e:
        mg.check_compatible([pair["base"], three])
    assert "num_hidden_layers" in str(e.value) and f"{three} = 3" in str(e.value) and "architectures differ" in str(e.value)
    wide = build_tiny_model_dir(tmp_path / "wide", tiny_tokenizer, seed=3, hidden_size=48, num_heads=2)
    with pytest.raises(mg.IncompatibleModelsError, match=r"hidden_size: .* = 32, .* = 48"):
        mg.run_mergekit(mg.slerp_config(pair["base"], wide, 0.5), tmp_path / "never")
    assert not (tmp_path / "never").exists()
    odd = build_tiny_model_dir(tmp_path / "odd", train_tokenizer([t.upper() for t in SAMPLE_TEXTS] + SAMPLE_TEXTS,
                                                                 vocab_size=450), seed=4)
    with pytest.raises(mg.IncompatibleModelsError) as e:
        mg.check_compatible([pair["base"], odd])
    assert {d["field"] for d in e.value.differences} == {"vocab_size", "tokenizer vocab"}
    assert "tokenizer_source='base'" in str(e.value)
    out = mg.run_mergekit(mg.slerp_config(pair["base"], odd, 0.5, tokenizer_source="base"), tmp_path / "aligned")
    assert weights(out)["model.embed_tokens.weight"].shape[0] == weights(pair["base"])["model.embed_tokens.weight"].shape[0]


def test_pickle_only_folders_are_refused_before_merging(pair, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(pair["other"], pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(weights(pair["other"]), pickled / "pytorch_model.bin")
    with pytest.raises(mg.MergeError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors only"):
        mg.run_mergekit(mg.slerp_config(pair["base"], pickled, 0.5), tmp_path / "never")
    assert not (tmp_path / "never").exists()
    from medslm.models import ModelRef

    with pytest.raises(mg.MergeError, match="pytorch_model.bin"):
        mg.resolve_parent("cpt", ModelRef(str(pickled)), tmp_path / "cache")
    assert mg.require_safetensors(pair["other"]) == pair["other"]  # control: a safetensors folder passes


def test_lora_adapter_is_resolved_once_in_full_precision(pair, tmp_path):
    from peft import LoraConfig, get_peft_model

    from medslm.models import ModelRef, load_model

    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(pair["base"], device="cpu"),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    expected = {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}
    with pytest.raises(mg.MergeError, match="LoRA adapter: resolve it first"):
        mg.run_mergekit(mg.slerp_config(pair["base"], adapter, 1.0), tmp_path / "never")
    parent = mg.resolve_parent("cpt", ModelRef(str(adapter)), tmp_path / "cache")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert parent.ref.ref == str(adapter) and weights(parent.path)[q].dtype == torch.float32
    assert_close(weights(parent.path)[q], expected[q], 1e-5, q)
    mtime = (parent.path / "model.safetensors").stat().st_mtime_ns
    again = mg.resolve_parent("cpt", ModelRef(str(adapter)), tmp_path / "cache")
    assert again.path == parent.path and (again.path / "model.safetensors").stat().st_mtime_ns == mtime  # cached


def test_memory_estimate_and_refusal(pair, tmp_path, monkeypatch):
    from medslm.merge import memory

    dirs = [pair["base"], pair["other"]]
    one = mg.safetensors_summary(pair["base"])
    assert one["bytes"] == sum(v.numel() * v.element_size() for v in weights(pair["base"]).values())
    est = mg.estimate_merge_memory(dirs, available_bytes=64 * 2**30)
    assert est["fits"] and est["inputs_bytes"] == 2 * one["bytes"]
    assert est["needed_bytes"] == est["overhead_bytes"] + est["inputs_bytes"] + est["shard_bytes"] + est["working_bytes"]
    assert mg.estimate_merge_memory(dirs, dtype="bfloat16", available_bytes=2**34)["output_bytes"] == one["bytes"] // 2
    small = mg.estimate_merge_memory(dirs, available_bytes=100 * 2**20)
    with pytest.raises(mg.MergeMemoryError, match=r"but only 100 MiB is available.*Try: smaller output shards") as e:
        mg.check_memory(small)
    assert "lazy_unpickle" not in str(e.value) and "low_cpu_memory" not in str(e.value)
    with pytest.raises(mg.MergeMemoryError):
        mg.run_mergekit(mg.slerp_config(*dirs, 0.5), tmp_path / "no_room", available_bytes=100 * 2**20)
    assert not (tmp_path / "no_room").exists()
    # a 7B-sized fake: the largest shard size that fits is chosen, else a refusal
    monkeypatch.setattr(memory, "safetensors_summary",
                        lambda d: {"bytes": 14 * 10**9, "params": 7 * 10**9, "largest_tensor": 500 * 10**6})
    gb = 10**9
    est = mg.estimate_merge_memory(dirs, dtype="bfloat16", overhead_bytes=0, available_bytes=35 * gb)
    assert est["fits"] and est["out_shard_size"] == 1_000_000_000
    est = mg.estimate_merge_memory(dirs, dtype="bfloat16", overhead_bytes=0, available_bytes=20 * gb)
    assert not est["fits"] and est["out_shard_size"] == 100_000_000
    est = mg.estimate_merge_memory(dirs, device="cuda", available_bytes=10**12, available_vram_bytes=10**9)
    assert est["fits_ram"] and not est["fits_vram"] and not est["fits"]


# --------------------------------------------------------------------------------------------------------------
# Sanity gate
# --------------------------------------------------------------------------------------------------------------


def test_sanity_check_flags_nan_repetition_and_an_echoed_prompt(pair, trained_pair, tiny_tokenizer, tmp_path):
    ok = mg.sanity_check(trained_pair["instruct"])
    assert ok["ok"] and ok["text"].strip().startswith("Paris"), ok
    tensors = load_file(trained_pair["instruct"] / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    broken = variant(trained_pair["instruct"], tmp_path / "nan", {"model.layers.1.mlp.up_proj.weight":
                                                                  tensors["model.layers.1.mlp.up_proj.weight"]})
    bad = mg.sanity_check(broken)
    assert not bad["ok"] and bad["nonfinite"] == ["model.layers.1.mlp.up_proj.weight"]
    rnd = mg.sanity_check(pair["base"])  # an untrained random model repeats one token
    assert not rnd["ok"] and rnd["finite"], rnd
    parrot = train_to_answer(trained_pair["random"], tiny_tokenizer, PROMPT, tmp_path / "parrot")
    echo = mg.sanity_check(parrot)
    assert not echo["ok"] and "echoes the prompt" in echo["problems"][0], echo
    assert mg.echoes_prompt("What is the capital of France? What is the", PROMPT)
    assert mg.echoes_prompt("what is the", PROMPT) and not mg.echoes_prompt("What is", PROMPT)
    assert not mg.echoes_prompt("What is the capital of France? Paris.", PROMPT)
    assert not mg.echoes_prompt(ANSWER, PROMPT)


def test_sanity_gate_wants_a_merge_close_to_its_parents(trained_pair, tmp_path):
    checks = [mg.sanity_check(trained_pair[k]) for k in ("instruct", "cpt")]
    parents = [check["text"] for check in checks]
    good = mg.run_mergekit(mg.slerp_config(trained_pair["instruct"], trained_pair["cpt"], 0.5), tmp_path / "good")
    passed = mg.sanity_check(good, parent_answers=parents)
    assert passed["ok"] and len(passed["parent_nll"]) == 2, passed
    # each parent's own log-loss on its answer moves that answer's bound halfway towards it from ln V
    ln_v = math.log(weights(good)["model.embed_tokens.weight"].shape[0])
    assert passed["nll_bound"] == pytest.approx([ln_v / 2, ln_v / 2], abs=1e-4)  # answers alone: bound ½ ln V
    with_own = mg.sanity_check(good, parent_answers=[(c["text"], c["answer_nll"]) for c in checks])
    assert with_own["ok"] and with_own["nll_bound"] == pytest.approx(
        [round((c["answer_nll"] + ln_v) / 2, 4) for c in checks], abs=1e-4), with_own
    # a broken merge: every tensor's values shuffled (finite, same statistics, nothing learned kept)
    gen = torch.Generator().manual_seed(0)
    scrambled = variant(good, tmp_path / "scrambled", {
        name: x.flatten()[torch.randperm(x.numel(), generator=gen)].reshape(x.shape)
        for name, x in weights(good).items()})
    failed = mg.sanity_check(scrambled, parent_answers=parents)
    assert failed["finite"] and not failed["ok"], failed
    assert all(nll > bound for nll, bound in zip(failed["parent_nll"], failed["nll_bound"], strict=True)), failed
    assert any("far from its parents" in problem for problem in failed["problems"])
    # the measure against transformers' own loss (labels masked on the prompt)
    from medslm.merge.sanity import _prompt_ids, answer_nll
    from medslm.models import load_model, load_tokenizer

    model, tok = load_model(good, device="cpu"), load_tokenizer(good)
    prompt = _prompt_ids(tok, PROMPT, True)["input_ids"]
    reply = tok(parents[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    labels = torch.cat([torch.full_like(prompt, -100), reply], dim=1)
    with torch.no_grad():
        loss = float(model(input_ids=torch.cat([prompt, reply], dim=1), labels=labels).loss)
    assert answer_nll(model, tok, PROMPT, parents[0]) == pytest.approx(loss, rel=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Selection: what the rule promises
# --------------------------------------------------------------------------------------------------------------


def point(t: float, medical: float, general: float, chat: float, ok: bool = True) -> mg.SweepPoint:
    label = "instruct" if t == 0 else "cpt" if t == 1 else "merge"
    return mg.SweepPoint(t, label, 0 < t < 1, f"m{t:g}", {"medical": medical, "general": general, "chat": chat},
                         {"ok": ok})


def probe_rule(general: float = 0.85, chat: float = 0.7) -> mg.SelectionRule:
    return mg.SelectionRule.from_params(MergeParams(min_general_fraction=general, min_chat_fraction=chat))


def test_selection_rule_promises_a_merge_that_beats_cpt():
    # the CPT parent has the most medicine and meets the loose fractions, yet the rule keeps a merge (t < 1) ...
    points = [point(0, 0.3, 0.9, 0.8), point(0.5, 0.5, 0.85, 0.76), point(0.8, 0.6, 0.80, 0.74),
              point(0.9, 0.65, 0.78, 0.72), point(1, 0.7, 0.79, 0.73)]
    sel = mg.select_merge(points, probe_rule(0.5, 0.5))
    assert not sel.fallback and sel.selected.t < 1
    # ... strictly above CPT on general and chat: t=0.9 has more medicine but less general than CPT
    assert sel.selected.t == 0.8 and sel.qualified == [0.5, 0.8]
    assert sel.selected.scores["general"] > points[-1].scores["general"]
    assert sel.selected.scores["chat"] > points[-1].scores["chat"]
    assert "t=0.9" not in sel.note and "not better than cpt" in str(sel.candidates[2]["fails"])
    # the fractions of the instruct model's scores bind too: general >= 0.9 x 0.9 leaves only t=0.5
    assert mg.select_merge(points, probe_rule(0.9, 0.5)).selected.t == 0.5
    info = sel.as_dict()
    assert info["selected"]["scores"]["medical"] == 0.6 and info["thresholds"]["general"] == pytest.approx(0.45)


def test_selection_falls_back_with_a_stated_reason():
    # no merge beats CPT on general: fall back to the smallest shortfall and say why
    points = [point(0, 0.3, 0.9, 0.8), point(0.5, 0.5, 0.70, 0.76), point(0.8, 0.6, 0.75, 0.74),
              point(1, 0.7, 0.79, 0.73)]
    sel = mg.select_merge(points, probe_rule())
    assert sel.fallback and sel.selected.t == 0.8 and sel.qualified == []
    assert "no merge meets the rule" in sel.note and "general 0.75 misses its threshold 0.765" in sel.note
    assert "not better than cpt (0.79)" in sel.note
    # a failed sanity check excludes a point; with none left the instruct model is kept
    points[1].sanity["ok"] = False
    assert "t=0.5" in mg.select_merge(points, probe_rule()).note
    points[2].sanity["ok"] = False
    kept = mg.select_merge(points, probe_rule())
    assert kept.fallback and kept.selected.label == "instruct" and "kept the instruct model" in kept.note


def test_selection_by_perplexity_and_nearest_without_scores():
    def ppl(t: float, medical: float, general: float) -> mg.SweepPoint:
        return mg.SweepPoint(t, "instruct" if t == 0 else "cpt" if t == 1 else "merge", 0 < t < 1, f"m{t:g}",
                             {"ppl_medical": medical, "ppl_general": general}, {"ok": True})

    points = [ppl(0, 29.2, 18.0), ppl(0.3, 27.0, 18.3), ppl(0.5, 25.2, 18.8), ppl(0.7, 24.0, 19.5), ppl(1, 23.0, 20.0)]
    rule = mg.SelectionRule.from_params(MergeParams(max_general_ppl_increase=0.05), "perplexity")
    sel = mg.select_merge(points, rule)
    # general ppl <= 1.05 x 18.0 = 18.9 keeps t=0.3 and t=0.5; t=0.5 has the lower medical perplexity
    assert not sel.fallback and sel.selected.t == 0.5 and sel.thresholds["ppl_general"] == pytest.approx(18.9)
    assert "minimize ppl_medical" in sel.rule and sel.as_dict()["selected"]["scores"]["ppl_general"] == 18.8
    bare = [mg.SweepPoint(t, "merge", True, f"m{t}", {}, {"ok": t != 0.5}) for t in (0.4, 0.5, 0.7)]
    near = mg.select_nearest(bare, 0.5, "no probes")
    assert near.selected.t == 0.4 and near.fallback and "no probes" in near.note  # 0.5 failed its sanity check
    with pytest.raises(mg.MergeError, match="sanity"):
        mg.select_nearest(bare[1:2], 0.5, "x")


# --------------------------------------------------------------------------------------------------------------
# Parameters, parents of a run, and the recipe end to end
# --------------------------------------------------------------------------------------------------------------


def test_merge_params_validation(pair):
    params = MergeParams()
    assert params.method == "slerp" and params.sweep == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert MergeParams(sweep=[0.8, "0.2"]).sweep == [0.2, 0.8]
    for bad in ({"t": 1.5}, {"t_list": [0.5]}, {"module_t": {"mlp": [0.1, 1.2]}}, {"sweep": [0.2, 0.2]},
                {"method": "frankenmerge"}, {"dtype": "fp8"}, {"experts": ["x"]}, {"method": "model_stock"},
                {"method": "ties", "experts": ["x"], "weights": [1.0]}, {"out_shard_size": "5 GB"},
                {"min_general_fraction": 1.2}, {"max_general_ppl_increase": -0.1}, {"eval_max_texts": 0}):
        with pytest.raises(ValidationError):
            MergeParams(**bad)
    ok = MergeParams(method="ties", experts=["e1"], weights=[0.7, 0.3], out_shard_size="500M")
    assert mg.parse_size(ok.out_shard_size) == 500_000_000
    config = mg.config_from_params(ok, pair["base"], [pair["other"], pair["third"]])
    assert config.merge_method == "ties" and [m.parameters["weight"] for m in config.models] == [0.7, 0.3]
    config = mg.config_from_params(MergeParams(t_list=[0.0, 1.0]), pair["base"], [pair["other"]])
    assert MergeConfiguration.model_validate(yaml.safe_load(config.to_yaml())).to_yaml() == config.to_yaml()
    assert parse_profile({"run": {}, "steps": {"merge": {"method": "breadcrumbs", "density": "9e-1"}}}).steps["merge"].density == 0.9


def test_resolve_parents_of_a_run(pair, tmp_path):
    from medslm.rundir import RunDir, write_json

    run = RunDir(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="run 00_prepare"):
        mg.resolve_parents(MergeParams(), run, tmp_path / "cache")
    shutil.copytree(pair["base"], run.prepare.model)
    with pytest.raises(mg.MergeError, match="no CPT model"):
        mg.resolve_parents(MergeParams(), run, tmp_path / "cache")
    shutil.copytree(pair["other"], run.cpt.model)
    parents = mg.resolve_parents(MergeParams(), run, tmp_path / "cache")
    assert [(p.role, p.path) for p in parents] == [("instruct", run.prepare.model), ("cpt", run.cpt.model)]
    # base_model.json (00_prepare's record) wins over the toy model folder; params.instruct wins over both
    write_json(run.prepare.base_model, {"ref": str(pair["third"]), "revision": None, "trust_remote_code": False})
    assert mg.resolve_parents(MergeParams(), run, tmp_path / "cache")[0].path == pair["third"]
    assert mg.resolve_parents(MergeParams(instruct=str(pair["other"])), run, tmp_path / "c")[0].path == pair["other"]


def test_recipe_scores_by_heldout_perplexity_without_probes(trained_pair, tmp_path):
    from medslm.merge.__main__ import main
    from medslm.rundir import RunDir, read_json, write_jsonl

    run = RunDir(tmp_path / "run")
    shutil.copytree(trained_pair["instruct"], run.prepare.model)
    shutil.copytree(trained_pair["cpt"], run.cpt.model)
    write_jsonl(run.cpt.path / "heldout_medical.jsonl", [{"text": t} for t in SAMPLE_TEXTS[2:4] * 3])
    write_jsonl(run.cpt.path / "heldout_general.jsonl", [{"text": t} for t in SAMPLE_TEXTS[:2] * 3])
    params = MergeParams(sweep=[0.25, 0.75], eval_max_texts=4, max_general_ppl_increase=1.0)
    recipe = mg.MergeRecipe(params, run, device="cpu", progress=False)
    assert recipe.setup().merge_method == "slerp" and [p.t for p in recipe.plan] == [0.25, 0.75]
    assert [p.relative_to(run.path) for p in recipe.merge()] == [Path("04_merge/sweep/t_0.25"), Path("04_merge/sweep/t_0.75")]
    points = recipe.evaluate()
    assert recipe.scored_by == "perplexity" and recipe.evaluation == {"medical_texts": 4, "general_texts": 4}
    assert [p.t for p in points] == [0.0, 0.25, 0.75, 1.0] and all(p.sanity_ok for p in points)
    assert all(len(p.sanity["parent_nll"]) == 2 for p in points if p.merged)  # checked against both parents
    assert all({"ppl_medical", "ppl_general"} == set(p.scores) for p in points)
    selection = recipe.select()
    assert selection.selected.t < 1 and "minimize ppl_medical" in selection.rule
    metrics = recipe.save()
    info = read_json(run.merge.selected / "selection.json")
    assert info["selected"]["scores"] == selection.selected.scores and info["rule"] == selection.rule
    assert metrics["evaluation"]["scored_by"] == "perplexity" and len(metrics["sweep"]) == 4
    assert read_json(run.merge.metrics)["selection"]["selected"]["t"] == selection.selected.t
    assert run.merge.figure("tradeoff").stat().st_size > 1000
    # the script runs the same recipe: a single (non-sweep) merge lands in 04_merge/linear, not under sweep/
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"run": {"output_dir": str(run.path), "device": "cpu"},
                                       "steps": {"merge": {"method": "linear", "t": 0.5, "sweep": [],
                                                           "eval_max_texts": 2}}}))
    assert main([str(profile)]) == 0
    assert (run.merge.path / "linear" / "mergekit_config.yml").is_file()
    assert read_json(run.merge.metrics)["method"] == "linear"
    assert [r["t"] for r in read_json(run.merge.metrics)["sweep"]] == [0.0, 0.5, 1.0]


def test_recipe_runs_mediphi_and_keeps_it_without_scores(trained_pair, tmp_path):
    from medslm.rundir import RunDir, read_json

    run = RunDir(tmp_path / "run")
    shutil.copytree(trained_pair["instruct"], run.prepare.model)
    shutil.copytree(trained_pair["cpt"], run.cpt.model)
    params = MergeParams(method="mediphi", experts=[str(trained_pair["random"])], density=0.9)
    recipe = mg.MergeRecipe(params, run, device="cpu", progress=False)
    assert recipe.setup().merge_method == "breadcrumbs" and [p.role for p in recipe.parents] == ["instruct", "cpt",
                                                                                                 "expert 1"]
    assert recipe.merge() == [run.merge.path / "mediphi" / "final"]
    assert (run.merge.path / "mediphi" / "stages").is_dir() and not run.merge.sweep.exists()
    metrics = recipe.run_all()  # the script's path: setup again, merges reused, evaluated, selected, saved
    assert recipe.scored_by == "none" and metrics["selection"]["fallback"]
    assert "no probes and no held-out texts" in metrics["selection"]["note"]
    assert read_json(run.merge.selected / "selection.json")["source_dir"] == str(run.merge.path / "mediphi" / "final")


def test_chord_gap_against_hand_computed_interpolation():
    """Parents at (general, medical) = (0.9, 0.3) and (0.5, 0.7): the chord gives medical 0.5 at general 0.7, so a
    merge at (0.7, 0.55) lies 0.05 above it and one at (0.8, 0.35) 0.05 below."""
    from medslm.merge.selection import chord_gaps
    from medslm.merge.sweep import SweepPoint

    points = [SweepPoint(0.0, "instruct", False, "a", {"general": 0.9, "medical": 0.3}),
              SweepPoint(0.3, "merge", True, "m1", {"general": 0.8, "medical": 0.35}),
              SweepPoint(0.6, "merge", True, "m2", {"general": 0.7, "medical": 0.55}),
              SweepPoint(1.0, "cpt", False, "b", {"general": 0.5, "medical": 0.7})]
    gaps = chord_gaps(points)
    assert gaps == pytest.approx({"0.3": -0.05, "0.6": 0.05})
    assert chord_gaps(points[1:3]) is None  # without both parents there is no chord
