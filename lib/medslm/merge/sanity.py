"""Cheap checks that a merge did not silently break a model: finite weights and a sensible greedy answer, close to
its parents' answers.

Closeness is the merged model's log-loss on the parents' greedy answers: a merge interpolates two models that
answer the prompt, so it must predict at least one of their answers much better than chance. The bound for a
parent's answer lies halfway between that parent's own log-loss on it and a uniform guess's (ln V nats per token,
V = the vocabulary size): a merge must keep at least half of what one parent knows about its own answer. For a
parent sure of its answer (own loss near 0) that is perplexity √V; a weakly trained parent, unsure of its own
answer, cannot hold its merges to more than it knows itself. A scrambled model sits near or above ln V.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def echoes_prompt(answer: str, prompt: str) -> bool:
    """Whether ``answer`` is only the prompt repeated (whole or cut off, at least 3 words or the whole prompt),
    e.g. "What is the capital of France? What is the" for "What is the capital of France?"."""
    said, asked = _words(answer), _words(prompt)
    if not said or not asked or len(said) < min(3, len(asked)):
        return False
    repeated = asked * (len(said) // len(asked) + 1)
    return said == repeated[: len(said)]


def _nonfinite_in_dir(model_dir: Path, limit: int = 10) -> list[str]:
    from safetensors import safe_open

    bad = []
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                x = st.get_tensor(name)
                if x.is_floating_point() and not bool(x.isfinite().all()):
                    bad.append(name)
                    if len(bad) >= limit:
                        return bad
    return bad


def _prompt_ids(tokenizer: Any, prompt: str, chat: bool) -> dict[str, Any]:
    """The prompt as model input (in the chat template, with the assistant turn opened, when there is one)."""
    if chat and getattr(tokenizer, "chat_template", None):
        return dict(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True))
    return dict(tokenizer(prompt, return_tensors="pt"))


def answer_nll(model: Any, tokenizer: Any, prompt: str, answer: str, chat: bool = True) -> float | None:
    """Mean negative log-likelihood (nats per token) of ``answer`` as the reply to ``prompt``; None for an empty
    answer."""
    import torch
    import torch.nn.functional as F

    ids = _prompt_ids(tokenizer, prompt, chat)["input_ids"]
    reply = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if reply.shape[1] == 0:
        return None
    dev = next(model.parameters()).device
    full = torch.cat([ids, reply], dim=1).to(dev)
    with torch.no_grad():
        logits = model(input_ids=full).logits[0, ids.shape[1] - 1:-1].float()
    return float(F.cross_entropy(logits, reply[0].to(dev)))


def closeness_bound(model: Any, parent_nll: float = 0.0) -> float:
    """Halfway between a parent's own log-loss on its answer (``parent_nll``) and a uniform guess's over the model's
    vocabulary: ½ (parent_nll + ln V) nats per token (perplexity √V for a parent sure of its answer)."""
    return 0.5 * (parent_nll + math.log(model.get_output_embeddings().weight.shape[0]))


def sanity_check(
    model: Any,
    tokenizer: Any = None,
    *,
    prompt: str = "What is the capital of France?",
    max_new_tokens: int = 12,
    device: str = "cpu",
    chat: bool = True,
    parent_answers: Sequence[str | tuple[str, float]] = (),
) -> dict[str, Any]:
    """Cheap checks of a merged model (a folder or a loaded model): every weight finite, and greedy generation
    from ``prompt`` (in the chat template when the tokenizer has one) is non-empty, not one token repeated and not
    the prompt echoed; with ``parent_answers`` (the parents' greedy answers to the same prompt, each alone or with
    the parent's own log-loss on it, its ``answer_nll``) also that the model is close to its parents: its log-loss
    on at least one parent's answer is within that answer's :func:`closeness_bound`.

    Returns ``{"ok", "finite", "nonfinite", "text", "answer_nll", "new_tokens", "distinct_tokens", "problems"}``
    (``answer_nll``: the model's own log-loss on its greedy answer), and with ``parent_answers`` ``parent_nll``
    (nats per token on each answer) and ``nll_bound`` (one per answer).
    """
    import torch

    from medslm.models import load_model, load_tokenizer

    problems: list[str] = []
    if isinstance(model, str | Path):
        model_dir = Path(model)
        nonfinite = _nonfinite_in_dir(model_dir)
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
        model = None if nonfinite else load_model(model_dir, device=device)
    else:
        nonfinite = [n for n, p in model.named_parameters() if p.is_floating_point() and not bool(p.isfinite().all())]
    report: dict[str, Any] = {"finite": not nonfinite, "nonfinite": nonfinite[:10], "text": "", "new_tokens": 0,
                              "distinct_tokens": 0}
    if nonfinite:
        problems.append(f"non-finite weights (NaN/inf) in {len(nonfinite)} tensor(s), e.g. {nonfinite[0]}")
    else:
        enc = _prompt_ids(tokenizer, prompt, chat)
        dev = next(model.parameters()).device
        enc = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                 else tokenizer.eos_token_id)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        content = [i for i in new if i not in special]
        text = tokenizer.decode(new, skip_special_tokens=True)
        report.update(text=text, answer_nll=answer_nll(model, tokenizer, prompt, text, chat), new_tokens=len(new),
                      distinct_tokens=len(set(content)))
        if not text.strip():
            problems.append("greedy generation is empty (only special tokens or whitespace)")
        elif len(content) >= 4 and len(set(content)) == 1:
            problems.append(f"greedy generation repeats one token: {text[:40]!r}")
        elif echoes_prompt(text, prompt):
            problems.append(f"greedy generation only echoes the prompt: {text[:60]!r}")
        pairs = [(a, 0.0) if isinstance(a, str) else (a[0], float(a[1] or 0.0)) for a in parent_answers]
        measured = [(nll, closeness_bound(model, own)) for answer, own in pairs
                    if (nll := answer_nll(model, tokenizer, prompt, answer, chat)) is not None]
        if measured:
            report.update(parent_nll=[round(nll, 4) for nll, _ in measured],
                          nll_bound=[round(bound, 4) for _, bound in measured])
            if all(nll > bound for nll, bound in measured):
                nll, bound = min(measured, key=lambda m: m[0] - m[1])
                problems.append(f"far from its parents: {nll:.2f} nats per token on the closer parent's answer, "
                                f"above its bound {bound:.2f} (halfway from that parent's own log-loss to a uniform "
                                f"guess's, ln V)")
    report["problems"] = problems
    report["ok"] = not problems
    return report
