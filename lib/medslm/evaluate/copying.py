"""In-context copying: does a model predict a sequence better the second time it reads it?

Grounded clinical tasks (extract the drugs *of this letter*, de-identify *this note*) need a model that copies from
its prompt. The classic probe (Olsson et al., 2022, "In-context learning and induction heads") feeds a random token
sequence twice: a model with induction heads predicts the second copy almost perfectly, one without predicts it no
better than the first. Random tokens rule out knowledge: only the context can help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class CopyLoss:
    """Mean next-token loss (nats) on the first and on the repeated copy of random sequences."""

    first: float
    second: float
    length: int
    sequences: int

    @property
    def gain(self) -> float:
        """How much the repeat is easier (first − second): about the first loss when the model copies, ~0 when not."""
        return self.first - self.second

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain": self.gain}


def repeated_random_tokens(vocab_size: int, length: int, sequences: int, seed: int = 0,
                           lowest_id: int = 10) -> torch.Tensor:
    """``sequences`` rows of ``length`` random ids (from ``lowest_id``, past special tokens), each written twice."""
    generator = torch.Generator().manual_seed(seed)
    once = torch.randint(lowest_id, vocab_size, (sequences, length), generator=generator)
    return torch.cat([once, once], dim=1)


@torch.no_grad()
def copy_loss(model: Any, vocab_size: int, length: int = 40, sequences: int = 16, seed: int = 0) -> CopyLoss:
    """:class:`CopyLoss` of a causal LM (a torch module called as ``model(input_ids).logits``) on repeated random sequences. The
    first token of each copy is left out: it cannot be predicted from before."""
    ids = repeated_random_tokens(vocab_size, length, sequences, seed)
    logits = model(ids.to(next(model.parameters()).device)).logits.float().cpu()
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    # losses[:, i] is the loss of token i + 1: tokens 1..length-1 are the first copy, length+1..2·length-1 the second
    return CopyLoss(first=float(losses[:, : length - 1].mean()), second=float(losses[:, length:].mean()),
                    length=length, sequences=sequences)
