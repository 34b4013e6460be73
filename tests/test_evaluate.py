"""The MCQ scorer follows lm-evaluation-harness semantics; perplexity is exp(mean token NLL)."""

import math

import pytest
import torch

from medslm.evaluate import MCQItem, MCQResult, accuracy, encode_pair, loglikelihoods, perplexity, score_mcq
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
