"""Model loading/saving: safetensors only, remote code off, precision choice, stats."""

import json

import pytest
import torch

from medslm.models import (
    bnb_4bit_config,
    choose_precision,
    is_local,
    load_model,
    load_tokenizer,
    lora_config,
    model_stats,
    resolve_device,
    save_model,
    torch_dtype,
)


def test_precision_choice_on_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    assert choose_precision("cpu") == "fp32"
    assert choose_precision("cpu", "bf16") == "bf16"  # explicit choice is honoured where it works
    with pytest.raises(ValueError, match="fp16 is not supported for training on a CPU"):
        choose_precision("cpu", "fp16")
    assert torch_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="not one of"):
        torch_dtype("int3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_save_and_load_round_trip_is_safetensors(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir, device="cpu")
    tok = load_tokenizer(tiny_model_dir)
    out = save_model(model, tok, tmp_path / "copy")
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    again = load_model(out, device="cpu")
    for (n1, p1), (_, p2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1
    assert next(again.parameters()).dtype == torch.float32


def test_pickle_weights_are_refused(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir, device="cpu")
    folder = tmp_path / "pickled"
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a pickle checkpoint, as old repos ship
    load_tokenizer(tiny_model_dir).save_pretrained(folder)
    with pytest.raises(OSError, match="safetensors only"):
        load_model(folder, device="cpu")


def test_remote_code_is_off_by_default(tiny_model_dir, monkeypatch):
    seen = {}
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(tiny_model_dir, device="cpu")
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


def test_hub_id_is_not_local_and_fails_offline_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not is_local("Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(OSError, match="hub id needs network access"):
        load_model("medslm-test/definitely-not-cached-model", device="cpu")


def test_model_stats(tiny_model_dir):
    stats = model_stats(load_model(tiny_model_dir, device="cpu"))
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert stats.parameters > cfg["vocab_size"] * cfg["hidden_size"]
    assert stats.trainable == stats.parameters and stats.dtype == "float32"
    assert stats.bytes >= stats.parameters * 4


def test_quantization_and_lora_configs():
    q = bnb_4bit_config("cpu")
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.float32
    lc = lora_config(["q_proj", "v_proj"], r=4, alpha=8)
    assert lc.r == 4 and lc.lora_alpha == 8 and set(lc.target_modules) == {"q_proj", "v_proj"}
