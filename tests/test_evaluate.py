"""The MCQ scorer follows lm-evaluation-harness semantics; perplexity is exp(mean token NLL)."""

import math

import pytest
import torch

from medslm.evaluate import (
    MCQItem,
    MCQResult,
    accuracy,
    encode_pair,
    heldout_perplexity,
    loglikelihoods,
    perplexity,
    score_mcq,
)
from medslm.models import load_model, load_tokenizer


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)


def manual_loglik(model, tok, context, continuation):
    """Independent computation: full sequence logits, sum of log p(continuation tokens)."""
    ctx = tok.encode(context, add_special_tokens=False)
    whole = tok.encode(context + continuation, add_special_tokens=False)
    cont = whole[len(ctx):]
    ids = torch.tensor([[tok.bos_token_id] + whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    start = 1 + len(ctx)
    return sum(float(logp[start + i - 1, t]) for i, t in enumerate(cont))


def test_encode_pair_moves_trailing_space(tiny_tokenizer):
    ctx, cont = encode_pair(tiny_tokenizer, "The capital of France is ", "Paris")
    ctx2, cont2 = encode_pair(tiny_tokenizer, "The capital of France is", " Paris")
    assert (ctx, cont) == (ctx2, cont2)
    whole = tiny_tokenizer.encode("The capital of France is Paris")  # the tokenizer's default: BOS added
    assert ctx + cont == whole and whole[0] == tiny_tokenizer.bos_token_id


def test_loglikelihood_matches_manual_computation(lm):
    model, tok = lm
    reqs = [("Paris is the capital of", " France"), ("Das Herz", " pumpt Blut"), ("Metformin", " is used")]
    got = loglikelihoods(model, tok, reqs, batch_size=2)
    for (c, k), value in zip(reqs, got, strict=True):
        assert value == pytest.approx(manual_loglik(model, tok, c, k), abs=1e-4)


def test_batching_does_not_change_scores(lm):
    model, tok = lm
    items = [MCQItem("The heart", ["pumps blood", "is red", "a", "sings loudly today"], 0),
             MCQItem("Paris is the capital of", ["France", "Germany"], 1)]
    one = [x for r in score_mcq(model, tok, items, batch_size=1) for x in r.logliks]
    many = [x for r in score_mcq(model, tok, items, batch_size=16) for x in r.logliks]
    assert one == pytest.approx(many, abs=1e-4)


def test_acc_norm_divides_by_choice_characters():
    item = MCQItem("ctx", ["aaaa", "b"], gold=0)
    r = MCQResult(item, [-4.0, -2.0])
    assert r.pred == 1 and not r.correct  # raw log-likelihood prefers the short choice
    assert r.pred_norm == 0 and r.correct_norm  # -4/4 = -1 > -2/1


def test_ties_go_to_lowest_index():
    r = MCQResult(MCQItem("c", ["x", "y", "z"], gold=1), [-1.0, -1.0, -1.0])
    assert r.pred == 0 and r.pred_norm == 0


def test_accuracy_groups():
    rs = [MCQResult(MCQItem("c", ["a", "b"], 0, meta={"lang": "de"}), [-1, -2]),
          MCQResult(MCQItem("c", ["a", "b"], 0, meta={"lang": "en"}), [-3, -2])]
    acc = accuracy(rs, by=("lang",))
    assert acc["all"] == {"acc": 0.5, "acc_norm": 0.5, "n": 2}
    assert acc["de"]["acc"] == 1.0 and acc["en"]["acc"] == 0.0


def test_perplexity_matches_mean_nll(lm):
    model, tok = lm
    text = "The heart pumps blood through the body."
    ids = torch.tensor([[tok.bos_token_id] + tok.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert perplexity(model, tok, [text]) == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_empty_continuation_is_an_error(lm):
    model, tok = lm
    with pytest.raises(ValueError, match="encodes to no tokens"):
        loglikelihoods(model, tok, [("abc", "")])


def old_perplexity(model, tok, texts, batch_size=16, max_length=512):
    """The previous implementation (full-vocabulary log_softmax over the whole batch), kept as the reference."""
    prefix = [tok.bos_token_id]
    seqs = [(prefix + tok.encode(t, add_special_tokens=False))[:max_length] for t in texts]
    seqs = [s for s in seqs if len(s) > 1]
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(chunk):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        m = mask[:, 1:].float()
        total_nll -= float((lp * m).sum())
        total_tokens += int(m.sum())
    return math.exp(total_nll / total_tokens)


@pytest.mark.parametrize("chunk_tokens", [1, 7, 4096])
def test_chunked_perplexity_equals_previous_code(lm, chunk_tokens):
    model, tok = lm
    texts = ["The heart pumps blood through the body.", "Metformin is used to treat type 2 diabetes. " * 5,
             "Das Medikament Metformin wird eingesetzt.", "Paris", "Accept all cookies to continue reading. " * 9]
    expected = old_perplexity(model, tok, texts, batch_size=3, max_length=40)
    got = perplexity(model, tok, texts, batch_size=3, max_length=40, chunk_tokens=chunk_tokens)
    assert got == pytest.approx(expected, rel=1e-5)


def test_heldout_perplexity_sample_size_is_a_parameter(lm):
    model, tok = lm
    records = [{"domain": "medical", "text": t} for t in ("Metformin is used.", "The heart pumps blood.", "x y")]
    one = heldout_perplexity(model, tok, records, max_texts=1)
    assert one["medical"] == pytest.approx(perplexity(model, tok, ["Metformin is used."]))
    assert heldout_perplexity(model, tok, records, max_texts=3)["medical"] != one["medical"]
    with pytest.raises(ValueError, match="max_texts"):
        heldout_perplexity(model, tok, records, max_texts=0)
