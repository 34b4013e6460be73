"""An annotator backend that cannot fail to parse: the verdict as a choice scored by log-likelihood.

A small local model often ignores the reply format (SmolLM2-135M-Instruct wrote no verdict line for 40 of 40
documents). :class:`ChoiceBackend` does not let it write: it renders the same prompt through the chat template,
opens the assistant's reply with ``Verdict:`` and scores each answer (``medical``, ``not_medical``) as a
continuation with :func:`medslm.evaluate.score_mcq` — the lm-evaluation-harness multiple-choice scorer of the
probes. The likelier answer is the label; the two likelihoods, normalised over the two answers, give
``P(medical)``, kept in the reply as a ``P(medical):`` line (:func:`medslm.annotate.parse_reply` reads it).

It is a :class:`~medslm.llm.Backend`, so it sits behind the reply cache like any other (a killed run resumes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medslm.llm import LLMError, Messages, OnReply

VERDICT_PREFIX = "Verdict:"
SCORER_VERSION = "choice-loglik-v1"


def choice_probabilities(logliks: Sequence[float]) -> list[float]:
    """Softmax of summed log-likelihoods: each answer's probability among the answers offered."""
    top = max(logliks)
    weights = [math.exp(x - top) for x in logliks]
    total = sum(weights)
    return [w / total for w in weights]


class ChoiceBackend:
    """A local causal LM (hub id or folder, safetensors) that answers by choosing among ``choices``.

    The reply is ``Verdict: <choice>`` and one ``P(<choice>): <probability>`` line per choice, the format
    :func:`medslm.annotate.parse_reply` reads. Pass ``model``/``tokenizer`` objects to reuse loaded ones.
    """

    name = "loglik"

    def __init__(self, model_ref: str | Path, *, choices: Sequence[str] = ("medical", "not_medical"),
                 prefix: str = VERDICT_PREFIX, device: str = "auto", batch_size: int = 8,
                 revision: str | None = None, trust_remote_code: bool = False, model: Any = None,
                 tokenizer: Any = None):
        from medslm.models import load_model, load_tokenizer

        self.model = str(model_ref)
        self.choices, self.prefix, self.batch_size = tuple(choices), prefix, batch_size
        self.tokenizer = tokenizer or load_tokenizer(model_ref, revision=revision, trust_remote_code=trust_remote_code)
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise LLMError(f"{model_ref}: the tokenizer has no chat template; use an instruct/chat model")
        self.lm = model or load_model(model_ref, device=device, revision=revision, trust_remote_code=trust_remote_code)
        self.lm.eval()

    def settings(self) -> dict[str, Any]:
        return {"scorer": SCORER_VERSION, "choices": list(self.choices), "prefix": self.prefix}

    def context(self, messages: Messages) -> str:
        """The prompt through the chat template, the assistant's reply opened with the verdict prefix."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + self.prefix

    def generate(self, prompts: Sequence[Messages], on_reply: OnReply | None = None) -> list[str]:
        from medslm.evaluate import MCQItem, score_mcq

        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            items = [MCQItem(self.context(m), list(self.choices), gold=0) for m in chunk]
            results = score_mcq(self.lm, self.tokenizer, items, batch_size=self.batch_size * len(self.choices))
            for j, result in enumerate(results):
                probs = choice_probabilities(result.logliks)
                best = max(range(len(self.choices)), key=lambda k: (probs[k], -k))
                lines = [f"{self.prefix} {self.choices[best]}"]
                lines += [f"P({c}): {p:.6f}" for c, p in zip(self.choices, probs, strict=True)]
                reply = "\n".join(lines)
                out.append(reply)
                if on_reply is not None:
                    on_reply(start + j, reply)
        return out
