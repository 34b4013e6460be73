"""In-context copying probe: a model that copies is told apart from one that cannot, with the loss it should have."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from medslm.evaluate.copying import copy_loss, repeated_random_tokens

VOCAB = 1000


class Uniform(torch.nn.Module):
    """Knows nothing and reads nothing: the same flat distribution everywhere."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # where the model lives, as for a real one

    def forward(self, ids):
        return SimpleNamespace(logits=torch.zeros(*ids.shape, VOCAB))


class Induction(Uniform):
    """An ideal induction head: after a token seen before, predict what followed it then (content, not position)."""

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, VOCAB)
        for row in range(ids.shape[0]):
            seen: dict[int, int] = {}
            for t in range(ids.shape[1]):
                token = int(ids[row, t])
                if token in seen:
                    logits[row, t, int(ids[row, seen[token] + 1])] = 30.0
                seen[token] = t
        return SimpleNamespace(logits=logits)


def test_the_probe_is_a_random_sequence_written_twice():
    ids = repeated_random_tokens(64, 12, 3, seed=1)
    assert ids.shape == (3, 24) and torch.equal(ids[:, :12], ids[:, 12:]) and int(ids.min()) >= 10
    assert not torch.equal(ids, repeated_random_tokens(64, 12, 3, seed=2))


def test_a_copying_model_gains_what_a_reader_of_nothing_cannot():
    flat = copy_loss(Uniform(), VOCAB, length=20, sequences=4)
    assert flat.first == pytest.approx(math.log(VOCAB)) and flat.gain == pytest.approx(0.0, abs=1e-6)
    induction = copy_loss(Induction(), VOCAB, length=20, sequences=4)
    # the second copy is all but certain; the first stays at log(1000) = 6.9 (a rare repeat inside it costs a little)
    assert induction.second < 0.01 and induction.gain > 6.8
    assert induction.as_dict()["gain"] == pytest.approx(induction.gain)


def test_an_untrained_llama_does_not_copy(tiny_model_dir):
    from medslm.models import load_model

    model = load_model(tiny_model_dir, device="cpu")
    result = copy_loss(model, model.config.vocab_size, length=20, sequences=4)
    assert abs(result.gain) < 0.2 and result.first > 0.5 * math.log(model.config.vocab_size)
