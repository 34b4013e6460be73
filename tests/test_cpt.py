"""03_cpt library: packing, full/LoRA/QLoRA training on CPU, trainable checks, resume, merge, launch configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SAMPLE_TEXTS, build_tiny_model_dir
from pydantic import ValidationError

from medslm import cpt
from medslm.params import STEP_PARAMS, CptParams, ProfileError, RunParams, parse_profile
from medslm.rundir import RunDir, read_json, sha256_file, write_jsonl
from medslm.training import loss_curve

# Small, fast training: 32-token blocks, batch 4, a few steps, high LR so a few steps visibly move the weights.
FAST = dict(block_size=32, batch_size=4, max_steps=4, save_steps=2, logging_steps=1, learning_rate=1e-2,
            embedding_learning_rate=1e-3)

pytestmark = pytest.mark.usefixtures("one_thread")


def _documents(n: int = 48) -> list[dict]:
    """Documents of different lengths (some longer than a block) built from the sample sentences."""
    return [{"id": f"d{i}", "text": " ".join(SAMPLE_TEXTS[i % 6 : i % 6 + 1 + i % 7]), "lang": "en"} for i in range(n)]


PROBES = [
    {"id": "g1", "probe": "cloze", "domain": "general", "lang": "en", "relation": "capital",
     "context": "The capital of France is", "choices": ["Paris", "Berlin", "Rome", "Madrid"], "gold": 0},
    {"id": "m1", "probe": "cloze", "domain": "medical", "lang": "en", "relation": "drug",
     "context": "Metformin is used to treat", "choices": ["type 2 diabetes", "asthma", "gout", "acne"], "gold": 0},
    {"id": "c1", "probe": "chat", "domain": "general", "lang": "en", "relation": "capital",
     "context": "<|user|>\nCapital of France?<|end|>\n<|assistant|>\n", "choices": ["Paris", "Rome", "Oslo", "Bern"],
     "gold": 0, "delimiter": ""},
]
HELDOUT = [
    {"domain": "medical", "lang": "en", "text": "The heart pumps blood through the body."},
    {"domain": "general", "lang": "de", "text": "Die Hauptstadt von Frankreich ist Paris."},
]




@pytest.fixture()
def run_dir(tmp_path, tiny_tokenizer) -> Path:
    """A run directory with what 03_cpt reads: 00_prepare's model, probes, held-out texts; 02_classify's corpus."""
    rd = RunDir(tmp_path / "run")
    build_tiny_model_dir(rd.prepare.model, tiny_tokenizer)
    write_jsonl(rd.prepare.probes, PROBES)
    write_jsonl(rd.prepare.heldout, HELDOUT)
    write_jsonl(rd.classify.filtered, _documents())
    return rd.path


def run_recipe(params: CptParams, run_dir: Path, evaluate: bool = True) -> dict:
    """The whole step, as ``python -m medslm.cpt.launch`` runs it, on a CPU."""
    return cpt.CptRecipe(params, run_dir, RunParams(device="cpu", seed=0)).run(evaluate=evaluate)


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(f))
    return out


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------


def test_params_defaults_valid_and_registered():
    p = CptParams()
    assert STEP_PARAMS["cpt"] is CptParams
    assert p.mode == "full" and p.base is None and p.max_steps == -1
    assert "q_proj" in p.target_modules and "down_proj" in p.target_modules
    assert CptParams(learning_rate="1e-4").learning_rate == 1e-4  # YAML 1.1 reads 1e-4 as a string
    for name, field in CptParams.model_fields.items():
        assert field.description, f"{name} has no description"


@pytest.mark.parametrize(("values", "field", "words"), [
    ({"mode": "full", "train_embeddings": True}, "train_embeddings", "lora/qlora"),
    ({"mode": "sft"}, "mode", "full"),
    ({"precision": "fp8"}, "precision", "bf16"),
    ({"warmup": 2.5}, "warmup", "whole number"),
    ({"max_steps": 0}, "max_steps", "-1"),
    ({"save_steps": 0}, "resume", "save_steps"),
    ({"mode": "qlora", "num_processes": 4}, "num_processes", "one GPU"),
    ({"accelerate_config": "fsdp_2gpu"}, "accelerate_config", "num_processes"),
    ({"heldout_fraction": 0.7}, "heldout_fraction", "0.5"),
    ({"target_modules": []}, "target_modules", "at least 1"),
    ({"qa_file": "qa.txt"}, "qa_file", ".jsonl"),
    ({"lora_rank": 8}, "lora_rank", "Extra inputs"),
])
def test_params_reject_bad_values(values, field, words):
    with pytest.raises(ValidationError) as err:
        CptParams(**values)
    errors = {e["loc"][0]: e["msg"] for e in err.value.errors()}
    assert field in errors and words in errors[field], errors


def test_params_combinations_that_are_fine():
    assert CptParams(mode="lora", train_embeddings=True).train_embeddings
    assert CptParams(save_steps=0, resume=False).save_steps == 0
    several = CptParams(mode="lora", num_processes=8, accelerate_config="fsdp_8gpu")
    assert (several.num_processes, several.accelerate_config) == (8, "fsdp_8gpu")
    assert CptParams(warmup=10).warmup == 10  # from 1 on: a number of warm-up steps


def test_profile_reports_cpt_field_errors(tmp_path):
    with pytest.raises(ProfileError) as err:
        parse_profile({"steps": {"cpt": {"mode": "full", "train_embeddings": True, "batch_size": 0}}}, tmp_path / "p.yaml")
    text = str(err.value)
    assert "step cpt" in text and "'train_embeddings'" in text and "'batch_size'" in text


def test_check_setup_rejects_fp16_on_cpu():
    with pytest.raises(ValueError, match="fp16"):
        cpt.check_setup(CptParams(precision="fp16"), "cpu")
    with pytest.raises(ValueError, match="qlora.*float32"):
        cpt.check_setup(CptParams(mode="qlora", precision="bf16"), "cpu")
    assert cpt.check_setup(CptParams(mode="qlora"), "cpu") == {"device": "cpu", "precision": "fp32"}


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


def test_split_documents_seeded_disjoint_complete():
    docs = _documents(40)
    train, held = cpt.split_documents(docs, 0.1, seed=3)
    assert len(held) == 4 and len(train) == 36
    assert {d["id"] for d in train} | {d["id"] for d in held} == {d["id"] for d in docs}
    assert not {d["id"] for d in train} & {d["id"] for d in held}
    assert cpt.split_documents(docs, 0.1, seed=3) == (train, held)
    assert cpt.split_documents(docs, 0.1, seed=4)[1] != held
    assert len(cpt.split_documents(docs[:5], 0.01, seed=0)[1]) == 1  # positive fraction: at least one held out
    assert cpt.split_documents(docs, 0.0)[1] == []


def test_packing_keeps_every_token(tiny_tokenizer):
    from medslm.training import tokenize_documents

    docs = cpt.texts(_documents(30))
    ids = tokenize_documents(tiny_tokenizer, docs)
    stream = [t for d in ids for t in d]
    stats = cpt.packing_stats(tiny_tokenizer, docs, block_size=32)
    assert stats["tokens"] == len(stream) and stats["documents"] == 30
    assert stats["real_tokens"] == len(stream) and stats["kept_share"] == 1.0 and stats["stream_intact"]
    assert stats["blocks"] == -(-len(stream) // 32)
    assert stats["docs_longer_than_block"] > 0  # long documents are split across blocks, not truncated
    # The dataset the Trainer sees: the non-pad tokens, in order, are the whole stream; padding is masked out.
    ds = cpt.pack(tiny_tokenizer, docs, 32)
    real = [t for row in ds for t, m in zip(row["input_ids"], row["attention_mask"], strict=True) if m]
    assert real == stream
    from medslm.training import lm_collator

    batch = lm_collator(tiny_tokenizer)([ds[len(ds) - 1]])
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_packing_stats_detect_a_lost_token(tiny_tokenizer, monkeypatch):
    """Negative control: if packing dropped a token, the stats would say so."""
    from medslm import training

    real_pack = training.pack_blocks

    def lossy(docs, block_size, pad_id):
        blocks, masks = real_pack(docs, block_size, pad_id)
        masks[0][5] = 0
        return blocks, masks

    monkeypatch.setattr(cpt.data, "pack_blocks", lossy)
    stats = cpt.packing_stats(tiny_tokenizer, cpt.texts(_documents(10)), 32)
    assert stats["kept_share"] < 1.0 and not stats["stream_intact"]


def test_read_texts_list_or_jsonl(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"text": "Q: a? A: b."}, {"text": "Q: c? A: d."}])
    assert cpt.read_texts(tmp_path / "qa.jsonl") == ["Q: a? A: b.", "Q: c? A: d."]
    assert cpt.read_texts(["x"]) == ["x"]
    with pytest.raises(TypeError):
        cpt.read_texts([{"text": "x"}])


def test_replay_samples_rejected_documents_only():
    kept = _documents(20)
    corpus = kept + [{"id": f"g{i}", "text": f"General document {i}.", "lang": "en"} for i in range(50)]
    replay = cpt.replay_documents(corpus, kept, 0.3, n_train=14, seed=0)
    assert len(replay) == cpt.replay_count(14, 0.3) == 6  # 6 / (14 + 6) = 30 % of the training documents
    assert all(r["id"].startswith("g") for r in replay)  # never a kept (or held-out) filtered document
    assert replay == cpt.replay_documents(corpus, kept, 0.3, 14, seed=0)
    assert replay != cpt.replay_documents(corpus, kept, 0.3, 14, seed=1)
    assert cpt.replay_documents(corpus, kept, 0.0, 14) == []
    assert len(cpt.replay_documents(corpus, kept, 0.9, 14)) == 50  # capped at what the corpus has
    mixed = cpt.training_texts(kept[:14], replay, seed=0)
    assert sorted(mixed) == sorted(cpt.texts(kept[:14]) + cpt.texts(replay)) and mixed != cpt.texts(kept[:14] + replay)
    assert cpt.training_texts(kept[:14], [], seed=0) == cpt.texts(kept[:14])
    with pytest.raises(ValueError, match="replay_fraction"):
        cpt.replay_count(10, 1.0)


def test_recipe_replays_corpus_documents(run_dir):
    rd = RunDir(run_dir)
    general = [{"id": f"g{i}", "text": f"The capital of country {i} is city {i}.", "lang": "en"} for i in range(40)]
    write_jsonl(rd.prepare.corpus, _documents() + general)
    p = CptParams(mode="full", replay_fraction=0.25, **FAST)
    metrics = run_recipe(p, run_dir, evaluate=False)
    n_train = metrics["corpus"]["train_documents"]
    assert metrics["replay"]["documents"] == metrics["corpus"]["replay_documents"] == cpt.replay_count(n_train, 0.25)
    assert metrics["packing"]["documents"] == n_train + metrics["replay"]["documents"]
    assert metrics["replay"]["sha256"] == sha256_file(rd.prepare.corpus)
    # another replay share trains on other data: its own checkpoint folder
    assert cpt.data_sha256("abc", metrics["replay"]) != "abc" == cpt.data_sha256("abc", {"documents": 0})


def test_recipe_without_corpus_warns_and_trains_on_the_filtered_corpus(run_dir):
    p = CptParams(mode="full", replay_fraction=0.3, **FAST)
    with pytest.warns(UserWarning, match="no corpus"):
        metrics = run_recipe(p, run_dir, evaluate=False)
    assert metrics["replay"]["documents"] == 0 and "no corpus" in metrics["replay"]["skipped"]


def test_curriculum_puts_qa_first(tiny_tokenizer):
    qa = [f"§ Question: what treats diabetes {i}? § Answer: Metformin." for i in range(6)]
    docs = cpt.texts(_documents(20))
    ds, phases = cpt.curriculum_dataset(tiny_tokenizer, docs, 32, qa, qa_epochs=2, epochs=1.5, seed=0)
    n_qa = len(cpt.pack(tiny_tokenizer, qa, 32))
    n_doc = len(cpt.pack(tiny_tokenizer, docs, 32))
    assert phases == {"qa_blocks": 2 * n_qa, "doc_blocks": n_doc + round(0.5 * n_doc)}
    assert len(ds) == phases["qa_blocks"] + phases["doc_blocks"]
    answer = tiny_tokenizer.encode("§", add_special_tokens=False)[-1]  # a byte no document contains
    assert all(answer in ds[i]["input_ids"] for i in range(phases["qa_blocks"]))
    assert not any(answer in ds[i]["input_ids"] for i in range(phases["qa_blocks"], len(ds)))


def test_pre_instruction_tuning_trains_on_qa_first(tmp_path, tiny_model_dir):
    qa = [f"§ Question {i}: what treats diabetes? § Answer: Metformin." for i in range(8)]
    docs = cpt.texts(_documents())
    p = CptParams(mode="full", pre_instruction_tuning=True, qa_epochs=1, **FAST)
    model, tok = cpt.setup_model(p, str(tiny_model_dir), "cpu")
    with pytest.raises(ValueError, match="QA texts"):
        cpt.train(model, tok, docs, p, tmp_path / "ck0", device="cpu")
    outcome = cpt.train(model, tok, docs, p, tmp_path / "ck", device="cpu", qa=qa)
    expected, phases = cpt.curriculum_dataset(tok, docs, 32, qa, 1, p.epochs, seed=0)
    assert outcome.phases == phases and outcome.blocks == len(expected) and outcome.global_step == 4
    first = next(iter(outcome.trainer.get_train_dataloader()))  # the order the Trainer reads: QA blocks first
    assert torch.equal(first["input_ids"], torch.tensor(expected[:4]["input_ids"]))


# --------------------------------------------------------------------------------------------------------------
# Modes, trainable checks, training, output
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "lora", "qlora"])
def test_mode_trains_and_writes_loadable_full_model(run_dir, mode):
    from transformers import AutoModelForCausalLM

    p = CptParams(mode=mode, **FAST)
    metrics = run_recipe(p, run_dir)
    rd = RunDir(run_dir)
    assert metrics["training"]["global_step"] == 4
    losses = [loss for _, loss in metrics["training"]["loss_curve"]]
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))
    model = AutoModelForCausalLM.from_pretrained(rd.cpt.model)  # a plain full model, no peft needed
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert model.dtype == torch.float32  # merged into a full-precision base, even for qlora
    state, base = _state(rd.cpt.model), _state(rd.prepare.model)
    assert set(state) == set(base)
    assert all(torch.isfinite(t).all() for t in state.values())
    changed = [k for k in base if not torch.equal(state[k], base[k])]
    assert any("q_proj" in k for k in changed), changed
    if mode != "full":
        assert (rd.cpt.adapter / "adapter_config.json").is_file()
        assert json.loads((rd.cpt.adapter / "adapter_config.json").read_text())["r"] == p.lora_r
        assert not any("embed_tokens" in k for k in changed)  # train_embeddings is off
    card = (rd.cpt.model / "README.md").read_text()
    assert str(rd.prepare.model) in card and sha256_file(rd.classify.filtered) in card and p.params_hash() in card
    saved = read_json(rd.cpt.metrics)
    assert saved["step"] == "cpt" and saved["params"]["mode"] == mode
    assert set(saved["before"]["probes"]) >= {"medical", "general", "chat"}
    assert set(saved["after"]["perplexity"]) == {"medical", "general", "corpus_heldout"}  # no corpus: no general docs
    assert saved["forgetting"]["general"] == pytest.approx(
        saved["before"]["probes"]["general"] - saved["after"]["probes"]["general"])
    assert saved["delta"]["perplexity"]["corpus_heldout"] == pytest.approx(
        saved["after"]["perplexity"]["corpus_heldout"] - saved["before"]["perplexity"]["corpus_heldout"])


def test_qlora_base_is_4bit_and_only_adapters_train(tiny_model_dir):
    import bitsandbytes as bnb

    model, _ = cpt.setup_model(CptParams(mode="qlora"), str(tiny_model_dir), "cpu")
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(m.weight.quant_state.quant_type == "nf4" for m in quantized)
    assert all(m.compute_dtype == torch.float32 for m in quantized)  # CPU: float32 compute
    report = cpt.check_trainable(model, CptParams(mode="qlora"))
    assert report["by_kind"]["lora"] == report["trainable"] > 0
    assert all("lora_" in n for n in report["names"])


def test_train_embeddings_are_trainable_with_their_own_learning_rate(tmp_path, tiny_tokenizer, tiny_model_dir):
    p = CptParams(mode="lora", train_embeddings=True, **FAST)
    model, tok = cpt.setup_model(p, str(tiny_model_dir), "cpu")
    report = cpt.check_trainable(model, p)
    emb_rows = len(tok) * 32
    assert report["by_kind"]["embeddings"] == emb_rows  # one trained copy: the tiny Llama ties embeddings and head
    assert cpt.embedding_learning_rates(model, p) == {"embed_tokens.modules_to_save": 1e-3,
                                                      "lm_head.modules_to_save": 1e-3}
    outcome = cpt.train(model, tok, cpt.texts(_documents()), p, tmp_path / "ck", device="cpu")
    initial = sorted(g["initial_lr"] for g in outcome.trainer.optimizer.param_groups)
    assert initial == [1e-3, 1e-2]
    emb_group = next(g for g in outcome.trainer.optimizer.param_groups if g["initial_lr"] == 1e-3)
    assert sum(t.numel() for t in emb_group["params"]) == emb_rows
    out = cpt.finalize(outcome.model, tok, p, tmp_path / "cpt", str(tiny_model_dir), global_step=outcome.global_step)
    merged, base = _state(out), _state(tiny_model_dir)
    assert not torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()  # still tied


def test_check_trainable_raises_when_intended_weights_are_frozen(tiny_model_dir):
    p = CptParams(mode="lora", train_embeddings=True)
    model, _ = cpt.setup_model(p, str(tiny_model_dir), "cpu")
    for n, prm in model.named_parameters():
        if "modules_to_save" in n:
            prm.requires_grad_(False)
    with pytest.raises(RuntimeError, match="embed_tokens"):
        cpt.check_trainable(model, p)
    for prm in model.parameters():
        prm.requires_grad_(False)
    with pytest.raises(RuntimeError, match="no parameter is trainable"):
        cpt.check_trainable(model, p)


def test_unknown_target_module_fails_before_training_and_names_the_available(run_dir):
    p = CptParams(mode="lora", target_modules=["q_proj", "qkv_proj"], **FAST)
    with pytest.raises(ValueError) as err:
        run_recipe(p, run_dir)
    msg = str(err.value)
    assert "qkv_proj" in msg and "available" in msg and "gate_proj" in msg and "o_proj" in msg
    assert not RunDir(run_dir).cpt.checkpoints.exists() and not RunDir(run_dir).cpt.model.exists()


def _crash_at(step: int):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise RuntimeError(f"simulated crash at step {step}")

    return Crash()


def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_model_dir):
    p = CptParams(mode="full", **{**FAST, "max_steps": 6, "save_steps": 3})
    docs = cpt.texts(_documents())
    model, tok = cpt.setup_model(p, str(tiny_model_dir), "cpu")
    with pytest.raises(RuntimeError, match="simulated crash"):
        cpt.train(model, tok, docs, p, tmp_path / "ck", device="cpu", callbacks=[_crash_at(4)])
    assert [d.name for d in (tmp_path / "ck").glob("checkpoint-*")] == ["checkpoint-3"]

    model, tok = cpt.setup_model(p, str(tiny_model_dir), "cpu")  # a fresh process would start from the base
    resumed = cpt.train(model, tok, docs, p, tmp_path / "ck", device="cpu")
    assert resumed.resumed_from.endswith("checkpoint-3")
    assert resumed.start_step == 3 and resumed.global_step == 6
    assert [s for s, _ in loss_curve(resumed.history) if s > 3] == [4, 5, 6]

    model, tok = cpt.setup_model(p, str(tiny_model_dir), "cpu")
    straight = cpt.train(model, tok, docs, p, tmp_path / "ck2", device="cpu")
    assert straight.start_step == 0 and straight.global_step == 6
    for (n, a), (_, b) in zip(resumed.model.named_parameters(), straight.model.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), n  # same data order, optimizer and schedule as without the crash

    no_resume = p.model_copy(update={"resume": False})
    model, tok = cpt.setup_model(no_resume, str(tiny_model_dir), "cpu")
    fresh = cpt.train(model, tok, docs, no_resume, tmp_path / "ck", device="cpu")
    assert fresh.resumed_from is None and fresh.start_step == 0 and fresh.global_step == 6


def test_fingerprint_separates_runs_that_train_differently():
    p = CptParams()
    assert cpt.fingerprint(p, "abc") == cpt.fingerprint(p.model_copy(update={"save_steps": 7, "resume": False}), "abc")
    assert cpt.fingerprint(p, "abc") != cpt.fingerprint(p.model_copy(update={"learning_rate": 5e-4}), "abc")
    assert cpt.fingerprint(p, "abc") != cpt.fingerprint(p, "abd")  # another corpus
    assert cpt.checkpoint_dir(Path("/x/ck"), p, "abc").parent == Path("/x/ck")


def test_compare_reports_forgetting():
    before = {"probes": {"medical": 0.25, "general": 0.9, "chat": 0.8}, "perplexity": {"general": 10.0, "medical": 40.0}}
    after = {"probes": {"medical": 0.7, "general": 0.8, "chat": 0.85}, "perplexity": {"general": 12.0, "medical": 20.0}}
    out = cpt.compare(before, after)
    assert out["forgetting"] == pytest.approx({"general": 0.1, "chat": -0.05, "general_perplexity_ratio": 1.2})
    assert out["delta"]["probes"]["medical"] == pytest.approx(0.45)
    assert out["delta"]["perplexity"]["medical"] == pytest.approx(-20.0)


# --------------------------------------------------------------------------------------------------------------
# Several GPUs: accelerate configs and command
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 8])
def test_fsdp_configs_and_launch_command_parse(n, tmp_path):
    from accelerate.commands.config import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment
    from accelerate.utils.launch import prepare_multi_gpu_env

    cfg = load_config_from_file(str(REPO / "params" / "accelerate" / f"fsdp_{n}gpu.yaml"))
    assert cfg.distributed_type.value == "FSDP" and cfg.num_processes == n
    assert cfg.fsdp_config["fsdp_version"] == 2

    profile = tmp_path / "profile.yaml"
    cmd = cpt.launch_command(profile, f"fsdp_{n}gpu", n)
    assert cmd[:2] == ["accelerate", "launch"] and cmd[-3:] == ["-m", "medslm.cpt.launch", str(profile.resolve())]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(cmd[2:]))
    assert args.use_fsdp and args.fsdp_version == 2 and args.num_processes == n
    assert args.module and args.training_script == "medslm.cpt.launch"
    env = {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    assert env["ACCELERATE_USE_FSDP"] == "true"
    with patch_environment(**env):  # the plugin the Trainer's Accelerator builds from these variables
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and "FULL_STATE_DICT" in str(plugin.state_dict_type)


def test_launch_command_without_config_and_unknown_config():
    cmd = cpt.launch_command("p.yaml", None, 2, run_dir="/tmp/r")
    assert "--multi_gpu" in cmd and cmd[-2:] == ["--run-dir", "/tmp/r"]
    assert "--multi_gpu" not in cpt.launch_command("p.yaml", None, 1)
    with pytest.raises(FileNotFoundError, match="fsdp_2gpu"):
        cpt.launch_command("p.yaml", "fsdp_3gpu", 3)


def test_two_process_ddp_on_cpu(run_dir, tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2`` on a CPU: DDP over gloo, via medslm.cpt.launch (~30 s)."""
    profile = tmp_path / "ddp.yaml"
    profile.write_text(
        f"run: {{name: ddp, output_dir: {run_dir}, device: cpu}}\n"
        "steps:\n  cpt: {mode: lora, max_steps: 4, batch_size: 2, block_size: 32, save_steps: 2, learning_rate: 0.01}\n"
    )
    cmd = cpt.launch_command(profile, None, 2, accelerate=cpt.python_accelerate()) + ["--train-only"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "lib")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = read_json(RunDir(run_dir).cpt.training)  # what the processes report back to a notebook
    assert report["processes"] == 2 and report["training"]["global_step"] == 4
    assert report["training"]["tokens_per_step"] == 2 * 2 * 32  # batch x processes x block
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["processes"] == 2
    assert (RunDir(run_dir).cpt.model / "model.safetensors").is_file()


def test_notebook_with_two_processes_hands_training_to_accelerate(run_dir, tmp_path, monkeypatch):
    """03_cpt run as a notebook (papermill) with ``num_processes: 2``: its train cell starts ``accelerate launch``
    (DDP over gloo on a CPU), reads the processes' report back, and evaluates the model they saved."""
    import papermill

    values = dict(mode="lora", num_processes=2, **{**FAST, "batch_size": 2})
    profile = tmp_path / "two.yaml"  # the launched processes read their parameters from the profile file
    profile.write_text(json.dumps({"run": {"output_dir": str(run_dir), "device": "cpu"}, "steps": {"cpt": values}}))
    for name, value in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "lib")}.items():
        monkeypatch.setenv(name, value)
    papermill.execute_notebook(str(REPO / "notebooks" / "03_cpt.ipynb"), str(tmp_path / "03_cpt.ipynb"),
                               parameters={**CptParams(**values).model_dump(mode="json"), "run_dir": str(run_dir),
                                           "profile": str(profile)},
                               kernel_name="python3", language="python", cwd=str(REPO / "notebooks"),
                               progress_bar=False)
    rd = RunDir(run_dir)
    report = read_json(rd.cpt.training)
    assert report["processes"] == 2 and report["training"]["global_step"] == 4
    assert report["training"]["tokens_per_step"] == 2 * 2 * 32  # batch x processes x block: two processes trained
    assert Path(report["model_dir"]) == rd.cpt.model and (rd.cpt.model / "model.safetensors").is_file()
    metrics = read_json(rd.cpt.metrics)
    assert set(metrics["after"]["probes"]) >= {"medical", "general", "chat"}  # the saved model was evaluated
    before, after = _state(RunDir(run_dir).prepare.model), _state(rd.cpt.model)
    assert any(not torch.equal(before[name], after[name]) for name in before)  # and it is a trained model


def _keys(tree, prefix=""):
    """Every key path of nested dicts (the shape of metrics.json, not its values)."""
    if not isinstance(tree, dict):
        return set()
    return {f"{prefix}{k}" for k in tree} | {p for k, v in tree.items() for p in _keys(v, f"{prefix}{k}.")}


def test_notebook_and_launcher_are_one_code_path(run_dir, tmp_path, monkeypatch):
    """03_cpt in the notebook (papermill) and under the launcher: same metrics keys and, on a CPU with one process,
    the same model; pre-instruction tuning (which needs QA texts) works under both."""
    import shutil

    import papermill

    qa = tmp_path / "qa.jsonl"
    write_jsonl(qa, [{"text": f"Question {i}: what treats diabetes? Answer: Metformin."} for i in range(8)])
    values = dict(mode="lora", pre_instruction_tuning=True, qa_file=str(qa), **FAST)
    notebook_run = tmp_path / "notebook-run"
    shutil.copytree(run_dir, notebook_run)
    profile = tmp_path / "p.yaml"
    profile.write_text(json.dumps({"run": {"output_dir": str(run_dir), "device": "cpu"}, "steps": {"cpt": values}}))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same thread count (and float sums) in both processes
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "lib")}
    proc = subprocess.run([sys.executable, "-m", "medslm.cpt.launch", str(profile)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    papermill.execute_notebook(str(REPO / "notebooks" / "03_cpt.ipynb"), str(tmp_path / "03_cpt.ipynb"),
                               parameters={**CptParams(**values).model_dump(mode="json"), "run_dir": str(notebook_run),
                                           "profile": str(profile)},
                               kernel_name="python3", language="python", cwd=str(REPO / "notebooks"),
                               progress_bar=False)
    launched, notebook = read_json(RunDir(run_dir).cpt.metrics), read_json(RunDir(notebook_run).cpt.metrics)
    assert _keys(launched) == _keys(notebook) and "pre_instruction_tuning.qa_texts" in _keys(launched)
    assert launched["pre_instruction_tuning"]["qa_texts"] == notebook["pre_instruction_tuning"]["qa_texts"] == 8
    assert launched["training"]["phases"] == notebook["training"]["phases"] and launched["training"]["phases"]["qa_blocks"]
    a, b = _state(RunDir(run_dir).cpt.model), _state(RunDir(notebook_run).cpt.model)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert launched["after"] == notebook["after"] and launched["forgetting"] == notebook["forgetting"]


def test_documents_are_not_wrapped_in_a_chat_marker(tiny_tokenizer):
    """SmolLM2's BOS is <|im_start|>, which its chat template writes before every turn: packing must then separate
    documents by EOS alone instead of wrapping each as <|im_start|>text<|im_end|>."""
    import copy

    from medslm.training import document_bos, tokenize_documents

    assert document_bos(tiny_tokenizer) == tiny_tokenizer.bos_token_id  # the toy template never writes <s>
    chat_marker = copy.deepcopy(tiny_tokenizer)
    chat_marker.chat_template = "{% for m in messages %}" + chat_marker.bos_token + "{{ m['content'] }}{% endfor %}"
    assert document_bos(chat_marker) is None
    ids = tokenize_documents(chat_marker, ["Metformin treats diabetes."])[0]
    assert ids[0] != chat_marker.bos_token_id and ids[-1] == chat_marker.eos_token_id
    assert tokenize_documents(tiny_tokenizer, ["Metformin treats diabetes."])[0][0] == tiny_tokenizer.bos_token_id


@pytest.mark.parametrize("save_dtype, expected", [("source", "bfloat16"), ("float32", "float32")])
def test_model_is_saved_in_the_source_dtype_unless_asked(run_dir, tiny_tokenizer, save_dtype, expected):
    """A bfloat16 base trained in float32 on a CPU comes back in bfloat16 (half the bytes), unless asked otherwise."""
    from safetensors import safe_open

    from medslm.models import load_model, save_model, source_dtype

    base = RunDir(run_dir).prepare.model
    save_model(load_model(base, device="cpu").to(torch.bfloat16), tiny_tokenizer, base)
    assert source_dtype(str(base)) == "bfloat16"
    run_recipe(CptParams(mode="lora", save_dtype=save_dtype, **FAST), run_dir, evaluate=False)
    model_dir = RunDir(run_dir).cpt.model
    assert source_dtype(str(model_dir)) == expected
    with safe_open(str(next(model_dir.glob("*.safetensors"))), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {f"torch.{expected}"}


def test_max_documents_caps_the_training_documents(run_dir):
    docs = _documents()
    sample = cpt.cap_documents(docs, 10, seed=0)
    assert len(sample) == 10 and sample == cpt.cap_documents(docs, 10, seed=0)
    assert sample != docs[:10]  # a seeded sample, not the first N
    assert [docs.index(d) for d in sample] == sorted(docs.index(d) for d in sample)  # corpus order kept
    assert cpt.cap_documents(docs, None) == docs == cpt.cap_documents(docs, 1000)

    capped = cpt.CptRecipe(CptParams(max_documents=10, replay_fraction=0, **FAST), run_dir, RunParams(device="cpu")).setup_data()
    whole = cpt.CptRecipe(CptParams(replay_fraction=0, **FAST), run_dir, RunParams(device="cpu")).setup_data()
    assert len(capped.train_docs) == len(capped.texts) == 10 == capped.corpus["train_documents"]
    assert len(whole.train_docs) == whole.corpus["train_documents"] == whole.corpus["train_documents_available"]
    assert capped.corpus["train_documents_available"] == len(whole.train_docs) > 10  # negative control
    assert capped.heldout_docs == whole.heldout_docs  # the cap never moves a held-out document into training
    assert {d["id"] for d in capped.train_docs} < {d["id"] for d in whole.train_docs}
    assert cpt.packing_stats(_tokenizer(run_dir), capped.texts, 32)["blocks"] < \
        cpt.packing_stats(_tokenizer(run_dir), whole.texts, 32)["blocks"]


def _tokenizer(run_dir: Path):
    from medslm.models import load_tokenizer

    return load_tokenizer(RunDir(run_dir).prepare.model)


def test_qlora_reports_the_real_parameter_count(tmp_path, tiny_tokenizer):
    from medslm.models import model_stats

    # hidden 64: bitsandbytes' CPU 4-bit layers need at least one quantisation block (64) of width
    base = build_tiny_model_dir(tmp_path / "wide", tiny_tokenizer, hidden_size=64, intermediate_size=128)
    quantized, _ = cpt.setup_model(CptParams(mode="qlora"), str(base), "cpu")
    plain, _ = cpt.setup_model(CptParams(mode="lora"), str(base), "cpu")  # same adapters on an unquantized base
    packed = sum(p.numel() for p in quantized.parameters())
    expected = sum(p.numel() for p in plain.parameters())
    assert packed < expected  # negative control: numel() of the packed 4-bit weights undercounts
    report = cpt.trainable_parameters(quantized)
    assert report["total"] == expected == cpt.trainable_parameters(plain)["total"]
    assert report["trainable"] == cpt.trainable_parameters(plain)["trainable"]
    assert model_stats(quantized).parameters == expected
    assert quantized.get_base_model().num_parameters() == expected  # transformers' own 4-bit-aware count agrees


def _train_lora(run_dir: Path, **values) -> tuple[dict[str, torch.Tensor], dict]:
    params = CptParams(**{**FAST, "mode": "lora", "max_steps": -1, "epochs": 1.0, "resume": False,
                          "replay_fraction": 0.0, **values})
    recipe = cpt.CptRecipe(params, run_dir, RunParams(device="cpu", seed=0))
    recipe.setup_data()
    recipe.setup_model()
    training = recipe.train()
    return {n: p.detach().clone() for n, p in recipe.model.named_parameters()}, training


def test_projection_before_training_leaves_training_unchanged(run_dir, capsys):
    with pytest.warns(UserWarning, match="cap max_steps, max_documents or epochs.*block_size"):
        projected, training = _train_lora(run_dir, projection_batches=2, warn_projected_minutes=1e-9)
    printed = capsys.readouterr().out
    plain, untouched = _train_lora(run_dir, projection_batches=0)
    projection = training["projection"]
    assert untouched["projection"] is None  # negative control: 0 batches, no projection
    assert projection["steps"] == training["global_step"] > 4  # the epoch's steps, as the Trainer counted them
    assert projection["tokens_per_step"] == FAST["block_size"] * FAST["batch_size"]
    assert projection["seconds"] == pytest.approx(
        projection["steps"] * projection["tokens_per_step"] / projection["tokens_per_second"], rel=0.01)
    assert f"for {projection['steps']:,} steps at" in printed and "projected" in printed
    # dropout draws random numbers and the trial backward fills gradients: both are put back, so same weights
    assert set(projected) == set(plain) and all(torch.equal(projected[n], plain[n]) for n in plain)
    assert training["loss_curve"] == untouched["loss_curve"]


def test_projection_counts_the_steps_left_after_a_resume():
    from types import SimpleNamespace

    from medslm.projection import Projection, planned_steps, report_projection

    args = SimpleNamespace(max_steps=-1, per_device_train_batch_size=4, gradient_accumulation_steps=3,
                           num_train_epochs=2.5)
    assert planned_steps(args, 50) == 13  # 13 micro-batches → 5 steps per epoch → ceil(12.5)
    assert planned_steps(args, 50, world_size=2) == 8  # 7 micro-batches per process → 3 steps per epoch
    assert planned_steps(SimpleNamespace(**{**vars(args), "max_steps": 7}), 50) == 7
    short = Projection(steps=10, tokens_per_step=100, tokens_per_second=50.0, seconds=20.0, measured_batches=1)
    assert report_projection(short, 30, "max_steps") is None and report_projection(None, 30, "max_steps") is None
    long = Projection(steps=5493, tokens_per_step=4096, tokens_per_second=82.0, seconds=5493 * 4096 / 82, measured_batches=1)
    with pytest.warns(UserWarning, match="4,573 min.*cap max_steps"):
        assert "cap max_steps" in report_projection(long, 30, "max_steps")
    assert long.line().startswith("projected 76 h 13 min for 5,493 steps at 82 tokens/s")
