"""Cheap checks that a merge did not silently break a model: finite weights and a sensible greedy answer."""

from __future__ import annotations

import re
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


def sanity_check(
    model: Any,
    tokenizer: Any = None,
    *,
    prompt: str = "What is the capital of France?",
    max_new_tokens: int = 12,
    device: str = "cpu",
    chat: bool = True,
) -> dict[str, Any]:
    """Cheap checks of a merged model (a folder or a loaded model): every weight finite, and greedy generation
    from ``prompt`` (in the chat template when the tokenizer has one) is non-empty, not one token repeated and not
    the prompt echoed.

    Returns ``{"ok", "finite", "nonfinite", "text", "new_tokens", "distinct_tokens", "problems"}``.
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
        if chat and getattr(tokenizer, "chat_template", None):
            enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
        else:
            enc = tokenizer(prompt, return_tensors="pt")
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
        report.update(text=text, new_tokens=len(new), distinct_tokens=len(set(content)))
        if not text.strip():
            problems.append("greedy generation is empty (only special tokens or whitespace)")
        elif len(content) >= 4 and len(set(content)) == 1:
            problems.append(f"greedy generation repeats one token: {text[:40]!r}")
        elif echoes_prompt(text, prompt):
            problems.append(f"greedy generation only echoes the prompt: {text[:60]!r}")
    report["problems"] = problems
    report["ok"] = not problems
    return report
