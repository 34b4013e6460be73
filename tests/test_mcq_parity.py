"""medslm's MCQ scorer against lm-evaluation-harness itself (lm_eval.simple_evaluate with its ``hf`` model, offline,
on a local task YAML): per-item predictions identical and log-likelihoods within 1e-4, for a tokenizer that adds
BOS and one that does not, on ≥ 100 items with contexts of ≥ 400 tokens, a few past the model's window and 24 short
ones (the batched path)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from medslm.evaluate import MCQItem, score_mcq, tok_encode
from medslm.evaluate.reference import lm_eval_logliks
from medslm.models import load_model, load_tokenizer, save_model
from tests.conftest import SAMPLE_TEXTS, build_tiny_model_dir

N_LONG, N_TRUNCATED, N_SHORT, MAX_POSITIONS = 100, 6, 24, 512
WORDS = sorted({w.strip(".") for t in SAMPLE_TEXTS for w in t.split()})
CHOICE_WORDS = WORDS + ["Zürich", "Ärztin", "Blutdruck", "q.i.d.", "42 mg", "Ödem", "x"]
ENDINGS = ["", " ", "\n", "\nAnswer:", " Antwort:", "  "]


def make_items(tokenizer, seed: int = 0) -> list[dict]:
    """Contexts of ≥ 400 tokens (the shared-context path), a few longer than the window, and short ones (< 128
    tokens: every choice row of every item batched together); 4 choices of 1–3 words, varied endings."""
    rng = random.Random(seed)
    items = []
    for i in range(N_LONG + N_TRUNCATED + N_SHORT):
        target = 400 if i < N_LONG else MAX_POSITIONS + 40 if i < N_LONG + N_TRUNCATED else rng.randint(5, 60)
        sentences: list[str] = []
        n_tokens = 0
        while n_tokens < target + 10:  # counted per sentence; the test checks the joined context's length
            sentences.append(rng.choice(SAMPLE_TEXTS) if rng.random() < 0.6 else
                             " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + ".")
            n_tokens += len(tokenizer.encode(sentences[-1], add_special_tokens=False))
        context = " ".join(sentences) + rng.choice(ENDINGS)
        choices = [" ".join(rng.choice(CHOICE_WORDS) for _ in range(rng.randint(1, 3))) for _ in range(4)]
        items.append({"id": f"q{i}", "context": context, "choices": choices, "gold": rng.randrange(4)})
    return items


def sharpened_model_dir(path, tokenizer, seed):
    """A tiny Llama whose weights are scaled up, so its choices differ clearly (a random init is near-uniform)."""
    folder = build_tiny_model_dir(path, tokenizer, seed=seed, hidden_size=64, num_heads=4, intermediate_size=128)
    model = load_model(folder, device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.15)
    return save_model(model, tokenizer, folder)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on 2 shared cores, 2 threads spin against other processes (100× slower matmuls here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def parity_models(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("parity")
    with_bos = sharpened_model_dir(root / "with_bos", tiny_tokenizer, seed=1)
    tokenizer = load_tokenizer(with_bos)
    tokenizer.add_bos_token = False  # installs a post-processor without BOS; saved into tokenizer.json
    without_bos = sharpened_model_dir(root / "without_bos", tokenizer, seed=2)
    return {"with_bos": with_bos, "without_bos": without_bos}


@pytest.mark.parametrize("kind", ["with_bos", "without_bos"])
def test_scores_equal_lm_eval(parity_models, kind, tmp_path):
    folder = parity_models[kind]
    tokenizer, model = load_tokenizer(folder), load_model(folder, device="cpu")
    adds_bos = tokenizer.encode("Paris")[0] == tokenizer.bos_token_id
    assert adds_bos == (kind == "with_bos")  # the two tokenizers really differ
    items = make_items(tokenizer, seed=7)
    lengths = [len(tok_encode(tokenizer, it["context"])) for it in items]
    assert min(lengths[:N_LONG]) >= 400 and min(lengths[N_LONG:N_LONG + N_TRUNCATED]) > MAX_POSITIONS
    assert max(lengths[N_LONG + N_TRUNCATED:]) < 128

    reference = lm_eval_logliks(folder, items, tmp_path, batch_size=16)
    ours = score_mcq(model, tokenizer, items, batch_size=4)

    deltas = [abs(a - b) for r, ref in zip(ours, reference, strict=True) for a, b in zip(r.logliks, ref, strict=True)]
    mismatches = [r.item.id for r, ref in zip(ours, reference, strict=True) if r.pred != max(range(4), key=ref.__getitem__)]
    print(json.dumps({"tokenizer": kind, "items": len(items), "max_abs_delta": max(deltas),
                      "prediction_mismatches": len(mismatches)}))
    assert max(deltas) <= 1e-4
    assert mismatches == []
    assert len({r.pred for r in ours}) > 1  # not a degenerate model that always picks one index

    # negative control: the old rule (BOS before every context) departs from lm-eval where the tokenizer adds none
    forced = score_mcq(model, tokenizer, [MCQItem.from_record(it) for it in items[:10]], add_bos_token=True)
    forced_delta = max(abs(a - b) for r, ref in zip(forced, reference, strict=False) for a, b in zip(r.logliks, ref,
                                                                                                    strict=True))
    if kind == "with_bos":
        assert forced_delta <= 1e-4
    else:
        assert forced_delta > 1e-3
