"""Evaluation core: log-likelihood multiple choice (lm-evaluation-harness semantics) and perplexity.

Multiple choice, as lm-evaluation-harness scores ``multiple_choice`` tasks:

* continuation = delimiter + choice (delimiter ``" "`` by default; chat probes use ``""`` after the assistant prefix);
* continuation tokens = encode(context + continuation) minus the tokens of encode(context);
* score = summed log-probabilities of the continuation tokens given everything before them;
* ``acc``: argmax of the scores; ``acc_norm``: argmax of score / character length of the choice;
* ties go to the lowest index (``numpy.argmax``).

The toy world's probes and every later benchmark go through :func:`score_mcq`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm


@dataclass
class MCQItem:
    """One multiple-choice question: a context, the choices and the index of the right one."""

    context: str
    choices: list[str]
    gold: int
    delimiter: str = " "
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> MCQItem:
        """Build from a probe/benchmark record (fields context, choices, gold, optional delimiter and id)."""
        meta = {k: v for k, v in rec.items() if k not in ("context", "choices", "gold", "delimiter", "id")}
        return cls(rec["context"], list(rec["choices"]), int(rec["gold"]), rec.get("delimiter", " "),
                   str(rec.get("id", "")), meta)


@dataclass
class MCQResult:
    """Scores of one item: summed log-likelihood per choice, the two predictions and whether they are right."""

    item: MCQItem
    logliks: list[float]

    @property
    def pred(self) -> int:
        return int(np.argmax(self.logliks))

    @property
    def pred_norm(self) -> int:
        lengths = np.array([max(len(c), 1) for c in self.item.choices], dtype=float)
        return int(np.argmax(np.array(self.logliks) / lengths))

    @property
    def correct(self) -> bool:
        return self.pred == self.item.gold

    @property
    def correct_norm(self) -> bool:
        return self.pred_norm == self.item.gold


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation as lm-evaluation-harness splits them.

    Trailing spaces of the context move to the continuation; the continuation's tokens are those of
    encode(context + continuation) after the first len(encode(context)) tokens.
    """
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = tokenizer.encode(context, add_special_tokens=False)
    return ctx, whole[len(ctx):]


def _prefix_ids(tokenizer: Any) -> list[int]:
    """The token every sequence starts with when scoring: BOS if the tokenizer has one, else EOS."""
    tok = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [tok] if tok is not None else []


@torch.no_grad()
def loglikelihoods(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = False,
) -> list[float]:
    """Summed log-probability of each continuation given its context, computed in length-sorted batches."""
    device = next(model.parameters()).device
    prefix = _prefix_ids(tokenizer)
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    encoded = []
    for ctx, cont in requests:
        c_ids, k_ids = encode_pair(tokenizer, ctx, cont)
        if not k_ids:
            raise ValueError(f"continuation {cont!r} encodes to no tokens after context {ctx[-40:]!r}")
        ids = (prefix + c_ids + k_ids)[-(max_length + 1):]
        encoded.append((ids, len(k_ids)))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    out = [0.0] * len(encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc="log-likelihoods", disable=not progress):
        idx = order[start:start + batch_size]
        inputs = [encoded[i][0][:-1] for i in idx]
        width = max(len(x) for x in inputs)
        batch = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, x in enumerate(inputs):
            batch[row, : len(x)] = torch.tensor(x)
            mask[row, : len(x)] = 1
        logits = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for row, i in enumerate(idx):
            ids, n_cont = encoded[i]
            n_in = len(ids) - 1
            targets = torch.tensor(ids[-n_cont:], device=device)
            lp = logprobs[row, n_in - n_cont : n_in].gather(-1, targets[:, None]).sum()
            out[i] = float(lp)
    model.train(was_training)
    return out


def score_mcq(
    model: Any,
    tokenizer: Any,
    items: Iterable[MCQItem | dict[str, Any]],
    batch_size: int = 32,
    progress: bool = False,
) -> list[MCQResult]:
    """Score multiple-choice items by log-likelihood (see the module docstring)."""
    items = [it if isinstance(it, MCQItem) else MCQItem.from_record(it) for it in items]
    requests = [(it.context, it.delimiter + ch) for it in items for ch in it.choices]
    lls = loglikelihoods(model, tokenizer, requests, batch_size=batch_size, progress=progress)
    results, k = [], 0
    for it in items:
        n = len(it.choices)
        results.append(MCQResult(it, lls[k : k + n]))
        k += n
    return results


def accuracy(results: Sequence[MCQResult], by: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """``acc``, ``acc_norm`` and ``n`` overall (key ``all``) and per combination of the ``by`` meta fields."""
    groups: dict[str, list[MCQResult]] = defaultdict(list)
    for r in results:
        groups["all"].append(r)
        if by:
            groups["/".join(str(r.item.meta.get(k)) for k in by)].append(r)
    return {
        key: {
            "acc": float(np.mean([r.correct for r in rs])),
            "acc_norm": float(np.mean([r.correct_norm for r in rs])),
            "n": len(rs),
        }
        for key, rs in sorted(groups.items())
    }


@torch.no_grad()
def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 16, max_length: int = 512) -> float:
    """Token-level perplexity of ``texts`` (each scored on its own, prefixed like MCQ contexts)."""
    device = next(model.parameters()).device
    prefix = _prefix_ids(tokenizer)
    seqs = [(prefix + tokenizer.encode(t, add_special_tokens=False))[:max_length] for t in texts]
    seqs = [s for s in seqs if len(s) > 1]
    if not seqs:
        raise ValueError("perplexity needs at least one text of two or more tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(chunk):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0]
        m = mask[:, 1:].to(device).float()
        total_nll -= float((lp * m).sum())
        total_tokens += int(m.sum())
    model.train(was_training)
    return math.exp(total_nll / total_tokens)


# --------------------------------------------------------------------------------------------------------------
# Probes of the toy world (and any benchmark written in the same record format)
# --------------------------------------------------------------------------------------------------------------

PROBE_GROUPS = ("medical", "general", "chat")


def probe_group(rec: dict[str, Any]) -> str:
    """The headline group of a probe record: ``chat`` for chat probes, else its domain (medical/general)."""
    return "chat" if rec.get("probe") == "chat" else rec["domain"]


def evaluate_probes(model: Any, tokenizer: Any, probes: Sequence[dict[str, Any]], batch_size: int = 64,
                    progress: bool = False) -> dict[str, Any]:
    """Accuracy on the probes: headline ``medical``/``general``/``chat`` (acc) plus acc/acc_norm per group,
    language and relation."""
    results = score_mcq(model, tokenizer, probes, batch_size=batch_size, progress=progress)
    for r in results:
        r.item.meta["group"] = probe_group({**r.item.meta})
    by_group = accuracy(results, by=("group",))
    out: dict[str, Any] = {g: by_group[g]["acc"] for g in PROBE_GROUPS if g in by_group}
    out["detail"] = {
        "group": {k: v for k, v in by_group.items() if k != "all"},
        "group_lang": {k: v for k, v in accuracy(results, by=("group", "lang")).items() if k != "all"},
        "relation": {k: v for k, v in accuracy(results, by=("relation",)).items() if k != "all"},
    }
    return out


def heldout_perplexity(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], max_texts: int = 400) -> dict[str, float]:
    """Perplexity per domain (medical/general) on held-out texts (records with ``domain`` and ``text``)."""
    by_domain: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        by_domain[rec["domain"]].append(rec["text"])
    return {d: perplexity(model, tokenizer, texts[:max_texts]) for d, texts in sorted(by_domain.items())}
