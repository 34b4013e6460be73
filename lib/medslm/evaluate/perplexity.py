"""Perplexity of held-out text, with the loss computed in chunks of positions.

Each text is scored on its own, after the prefix token (BOS, else EOS — lm-eval's ``loglikelihood_rolling`` prefix),
truncated to ``max_length`` tokens. The model runs without its language-model head; the head and the log-softmax
are applied to ``chunk_tokens`` positions at a time, so memory holds one [chunk, vocab] block instead of the
[batch, length, vocab] logits of the whole batch (6.2 GB for a 135 M model at 16 × 512, issue 13).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from medslm.evaluate.mcq import prefix_token_id
from medslm.progress import iter_progress


def _head_parts(model: Any) -> tuple[Any, Any, float | None] | None:
    """(decoder, lm head, final logit soft-cap) when the model computes ``logits = head(decoder(x))``; else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if head is None or decoder is None or decoder is model or getattr(model.config, "logit_scale", None):
        return None
    return decoder, head, getattr(model.config, "final_logit_softcapping", None)


def _nll_sum(model: Any, ids: torch.Tensor, mask: torch.Tensor, chunk_tokens: int) -> tuple[float, int]:
    """Summed next-token NLL and the number of predicted tokens of a right-padded batch."""
    targets = ids[:, 1:].reshape(-1)
    keep = mask[:, 1:].reshape(-1).bool()
    parts = _head_parts(model)
    if parts is None:  # a model with its own logit transform: full logits, one row at a time
        total = 0.0
        for row in range(ids.shape[0]):
            n = int(mask[row].sum())
            logits = model(input_ids=ids[row:row + 1, :n]).logits[0, :-1].float()
            total += float(F.cross_entropy(logits, ids[row, 1:n], reduction="sum"))
        return total, int(keep.sum())
    decoder, head, softcap = parts
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    hidden = hidden.reshape(-1, hidden.shape[-1])[keep]
    targets = targets[keep]
    total = 0.0
    for start in range(0, hidden.shape[0], chunk_tokens):
        logits = head(hidden[start:start + chunk_tokens]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        total += float(F.cross_entropy(logits, targets[start:start + chunk_tokens], reduction="sum"))
    return total, int(targets.numel())


@torch.no_grad()
def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 16, max_length: int = 512,
               chunk_tokens: int = 1024) -> float:
    """Token-level perplexity of ``texts``: exp(summed NLL / predicted tokens), loss in ``chunk_tokens`` blocks."""
    device = next(model.parameters()).device
    prefix = prefix_token_id(tokenizer)
    prefix_ids = [prefix] if prefix is not None else []
    seqs = [(prefix_ids + tokenizer.encode(t, add_special_tokens=False))[:max_length] for t in texts]
    seqs = [s for s in seqs if len(s) > 1]
    if not seqs:
        raise ValueError("perplexity needs at least one text of two or more tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(seqs), batch_size)
        for start in iter_progress(starts, "perplexity", total=len(starts), unit=" batches"):
            chunk = seqs[start:start + batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, s in enumerate(chunk):
                ids[row, : len(s)] = torch.tensor(s)
                mask[row, : len(s)] = 1
            nll, n = _nll_sum(model, ids.to(device), mask.to(device), chunk_tokens)
            total_nll += nll
            total_tokens += n
    finally:
        model.train(was_training)
    return math.exp(total_nll / total_tokens)


def heldout_perplexity(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], *, max_texts: int,
                       batch_size: int = 16, max_length: int = 512) -> dict[str, float]:
    """Perplexity per domain (medical/general) on the first ``max_texts`` held-out texts of each domain
    (records with ``domain`` and ``text``). Callers choose ``max_texts`` (a step parameter; small on CPU)."""
    if max_texts < 1:
        raise ValueError(f"max_texts must be ≥ 1, got {max_texts}")
    by_domain: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        by_domain[rec["domain"]].append(rec["text"])
    return {d: perplexity(model, tokenizer, texts[:max_texts], batch_size=batch_size, max_length=max_length)
            for d, texts in sorted(by_domain.items())}
