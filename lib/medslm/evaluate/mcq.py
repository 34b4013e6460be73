"""Log-likelihood multiple choice, scored exactly as lm-evaluation-harness 0.4.13 scores ``multiple_choice`` tasks
with its ``hf`` model, but from one forward pass over each shared context.

lm-eval's rules (``lm_eval/api/model.py`` ``TemplateLM._encode_pair``/``loglikelihood``,
``lm_eval/models/huggingface.py`` ``HFLM.tok_encode``/``_loglikelihood_tokens``), followed here:

* request = (context, delimiter + choice); the delimiter is ``" "`` (``target_delimiter``), ``""`` with a chat template;
* trailing whitespace of the context (``str.rstrip()``: spaces *and* newlines) moves to the continuation;
* contexts are encoded with the tokenizer's own default ``add_special_tokens`` (``add_bos_token=None``): a BOS token
  only where the tokenizer adds one (Llama-3, Gemma: yes; SmolLM2, Qwen: no). ``add_bos_token=True/False`` forces
  it on/off, as ``--model_args add_bos_token=...`` does. A string that already starts with the decoded prefix token
  (BOS, else EOS) is encoded without special tokens;
* continuation tokens = encode(context + continuation) minus the first len(encode(context)) tokens;
  an empty context becomes the prefix token (BOS, else EOS);
* model input = (context + continuation tokens)[-(max_length + 1):][:-1]; score = summed log-probabilities of the
  continuation tokens;
* ``acc`` = argmax of the scores, ``acc_norm`` = argmax of score / character length of the choice (ties: lowest index).

Speed: lm-eval feeds every (context, choice) pair through the model, recomputing the shared context once per choice.
:func:`score_mcq` runs the context once (``logits_to_keep=1``), repeats its KV cache for the choices and runs only
the choice tokens; the model sees the same tokens at the same positions, so the scores agree to float rounding.
Items too long for ``max_length`` (lm-eval truncates each request from the left) take the per-request path
:func:`loglikelihoods`, which mirrors lm-eval's batching. Log-softmax is taken in float32 (lm-eval: the model's dtype).
"""

from __future__ import annotations

import copy
import inspect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medslm.progress import iter_progress


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

    def record(self) -> dict[str, Any]:
        """A JSON-ready per-item record (for ``items/*.jsonl``)."""
        return {"id": self.item.id, "gold": self.item.gold, "pred": self.pred, "pred_norm": self.pred_norm,
                "correct": self.correct, "correct_norm": self.correct_norm, "logliks": self.logliks, **self.item.meta}


# --------------------------------------------------------------------------------------------------------------
# Encoding (lm-eval's tok_encode / _encode_pair)
# --------------------------------------------------------------------------------------------------------------


def prefix_token_id(tokenizer: Any) -> int | None:
    """lm-eval's ``prefix_token_id``: BOS if the tokenizer has one, else EOS (context of an empty context)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def tok_encode(tokenizer: Any, text: str, add_bos_token: bool | None = None) -> list[int]:
    """Encode ``text`` as lm-eval's ``HFLM.tok_encode`` does (see the module docstring)."""
    kwargs: dict[str, Any] = {} if add_bos_token is None else {"add_special_tokens": add_bos_token}
    prefix = prefix_token_id(tokenizer)
    if prefix is not None and text.startswith(tokenizer.decode(prefix)):
        kwargs["add_special_tokens"] = False
    ids = tokenizer.encode(text, **kwargs)
    bos = tokenizer.bos_token_id
    if kwargs.get("add_special_tokens") and bos is not None and (not ids or ids[0] != bos):
        # lm-eval loads the tokenizer with add_bos_token=True, which installs a BOS post-processor
        ids = [bos] + ids
    return ids


def encode_pair(tokenizer: Any, context: str, continuation: str,
                add_bos_token: bool | None = None) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) of one request, as lm-eval's ``loglikelihood`` splits them."""
    return encode_choices(tokenizer, context, [continuation], add_bos_token)[0]


def encode_choices(tokenizer: Any, context: str, continuations: Sequence[str],
                   add_bos_token: bool | None = None) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_pair` for several continuations of one context (the context is encoded once)."""
    if context == "":
        prefix = prefix_token_id(tokenizer)
        out = []
        for continuation in continuations:
            cont = tok_encode(tokenizer, continuation, add_bos_token=False)
            out.append(([prefix], cont) if not cont or prefix != cont[0] else (cont[:1], cont[1:]))
        return out
    n_spaces = len(context) - len(context.rstrip())
    moved, context = (context[-n_spaces:], context[:-n_spaces]) if n_spaces else ("", context)
    ctx = tok_encode(tokenizer, context, add_bos_token)
    return [(ctx, tok_encode(tokenizer, context + moved + continuation, add_bos_token)[len(ctx):])
            for continuation in continuations]


def _checked_pairs(tokenizer: Any, context: str, continuations: Sequence[str],
                   add_bos_token: bool | None) -> list[tuple[list[int], list[int]]]:
    pairs = encode_choices(tokenizer, context, continuations, add_bos_token)
    for continuation, (_, cont) in zip(continuations, pairs, strict=True):
        if not cont:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens after context {context[-40:]!r}")
    return pairs


def model_max_length(model: Any, max_length: int | None) -> int:
    """The window lm-eval uses: ``max_length`` if given, else the model's ``max_position_embeddings`` (2048)."""
    return max_length or getattr(model.config, "max_position_embeddings", None) or 2048


def _gather_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per row of ``logits`` [n, vocab] (float32 log-softmax, one row block at a time)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None])[:, 0]


# --------------------------------------------------------------------------------------------------------------
# Per-request path (lm-eval's _loglikelihood_tokens, without its one-token logits cache)
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def loglikelihoods(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = False,
    add_bos_token: bool | None = None,
) -> list[float]:
    """Summed log-probability of each continuation given its context: one model row per request, length-sorted,
    right-padded batches, left truncation to ``max_length`` (as lm-eval)."""
    encoded = [_checked_pairs(tokenizer, ctx, [cont], add_bos_token)[0] for ctx, cont in requests]
    return _loglikelihood_tokens(model, tokenizer, encoded, batch_size, model_max_length(model, max_length), progress)


@torch.no_grad()
def _loglikelihood_tokens(model: Any, tokenizer: Any, encoded: Sequence[tuple[list[int], list[int]]],
                          batch_size: int, max_length: int, progress: bool = False) -> list[float]:
    device = next(model.parameters()).device
    rows = [((ctx + cont)[-(max_length + 1):][:-1], cont) for ctx, cont in encoded]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]) - 1)
    out = [0.0] * len(rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    for start in iter_progress(tqdm(starts, desc="log-likelihoods", disable=not progress), "log-likelihoods",
                               total=len(starts), unit=" batches"):
        idx = order[start:start + batch_size]
        width = max(len(rows[i][0]) for i in idx)
        batch = torch.full((len(idx), width), pad, dtype=torch.long)
        for row, i in enumerate(idx):
            batch[row, : len(rows[i][0])] = torch.tensor(rows[i][0])
        logits = model(input_ids=batch.to(device)).logits  # right padding: causal rows are unaffected
        # the continuation positions of every row, gathered so that one log-softmax serves the whole batch
        rows_idx = [row for row, i in enumerate(idx) for _ in rows[i][1]]
        cols_idx = [len(rows[i][0]) - len(rows[i][1]) + k for i in idx for k in range(len(rows[i][1]))]
        targets = torch.tensor([t for i in idx for t in rows[i][1]], device=device)
        logprobs = _gather_logprobs(logits[rows_idx, cols_idx], targets).tolist()
        start_row = 0
        for i in idx:
            n = len(rows[i][1])
            out[i], start_row = float(sum(logprobs[start_row:start_row + n])), start_row + n
    model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------------------------
# Shared-context path
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _score_shared_context(model: Any, ctx: list[int], conts: Sequence[list[int]], batch_size: int) -> list[float]:
    """Scores of several continuations after one context: the context runs once, its KV cache is repeated for
    the choices, and only the choice tokens (all but each one's last) run again."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([ctx], device=device), use_cache=True, logits_to_keep=1)
    name, context_cache = _cache_argument(model), _returned_cache(out)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    scores = [float(first[cont[0]]) for cont in conts]
    longer = [i for i, cont in enumerate(conts) if len(cont) > 1]
    for start in range(0, len(longer), batch_size):
        idx = longer[start:start + batch_size]
        cache = context_cache if start + batch_size >= len(longer) else copy.deepcopy(context_cache)
        cache.batch_repeat_interleave(len(idx))
        width = max(len(conts[i]) - 1 for i in idx)
        batch = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            batch[row, : len(conts[i]) - 1] = torch.tensor(conts[i][:-1])
        mask = torch.ones((len(idx), len(ctx) + width), dtype=torch.long)  # right padding: causal rows unaffected
        logits = model(input_ids=batch.to(device), attention_mask=mask.to(device), **{name: cache}).logits
        for row, i in enumerate(idx):
            targets = torch.tensor(conts[i][1:], device=device)
            scores[i] += float(_gather_logprobs(logits[row, : len(conts[i]) - 1], targets).sum())
    return scores


def _cache_argument(model: Any) -> str:
    """The forward keyword of the KV cache: ``cache`` (transformers ≥ 5.2x) or ``past_key_values`` (before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def score_mcq(
    model: Any,
    tokenizer: Any,
    items: Iterable[MCQItem | dict[str, Any]],
    batch_size: int = 32,
    progress: bool = False,
    add_bos_token: bool | None = None,
    max_length: int | None = None,
    shared_context_min_tokens: int = 128,
) -> list[MCQResult]:
    """Score multiple-choice items by log-likelihood (lm-eval's numbers; see the module docstring).

    Items whose context has at least ``shared_context_min_tokens`` tokens run the context once and score their
    choices from its KV cache; shorter ones (and items longer than ``max_length``) take lm-eval's per-request path,
    every choice row of every item in length-sorted batches of ``batch_size`` rows — both give lm-eval's numbers."""
    items = [it if isinstance(it, MCQItem) else MCQItem.from_record(it) for it in items]
    window = model_max_length(model, max_length)
    was_training = model.training
    model.eval()
    logliks: list[list[float] | None] = [None] * len(items)
    short: list[tuple[int, list[tuple[list[int], list[int]]]]] = []  # (item index, its pairs)
    try:
        for i, item in enumerate(iter_progress(tqdm(items, desc="multiple choice", disable=not progress),
                                               "multiple choice (encoded, long contexts scored)", total=len(items),
                                               unit=" items")):
            pairs = _checked_pairs(tokenizer, item.context, [item.delimiter + ch for ch in item.choices], add_bos_token)
            ctx = pairs[0][0]
            shared = all(p[0] == ctx for p in pairs) and all(len(ctx) + len(c) <= window + 1 for _, c in pairs)
            if shared and len(ctx) >= shared_context_min_tokens:
                logliks[i] = _score_shared_context(model, ctx, [c for _, c in pairs], batch_size)
            else:
                short.append((i, pairs))
        if short:  # short contexts: every row of every item in length-sorted batches (lm-eval's own path)
            flat = _loglikelihood_tokens(model, tokenizer, [p for _, pairs in short for p in pairs], batch_size, window)
            start = 0
            for i, pairs in short:
                logliks[i], start = flat[start:start + len(pairs)], start + len(pairs)
    finally:
        model.train(was_training)
    return [MCQResult(item, scores) for item, scores in zip(items, logliks, strict=True)]


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
