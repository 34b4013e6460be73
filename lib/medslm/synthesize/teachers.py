"""Teachers answer the grid's prompts: the programmatic teacher (exact answers + injected faults) or an LLM.

An LLM teacher is any :mod:`medslm.llm` backend (``openai`` for a vLLM/TGI/Ollama/``transformers serve`` endpoint,
``transformers`` in-process) behind the reply cache, so a killed run resumes without repeating a call. A JSON reply
that does not parse is asked again (the bad reply and a correction go into the conversation, so the retry is a new
prompt with its own cache entry) up to ``parse_retries`` times; after that the example is counted as failed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medslm.llm import LLM, OpenAIBackend, TransformersBackend
from medslm.synthesize.faults import inject_faults
from medslm.synthesize.grid import Example, retry_message
from medslm.synthesize.tasks import Task
from medslm.toyworld.knowledge import KnowledgeBase

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def programmatic_answers(examples: list[Example], tasks: dict[str, Task], kb: KnowledgeBase,
                         rates: dict[str, float], seed: int = 0) -> list[Example]:
    """Exact answers with faults injected at ``rates``; returns the examples plus near-duplicate copies."""
    for e in examples:
        e.answer, e.teacher, e.attempts = e.reference, "programmatic", 1
    return examples + inject_faults(examples, tasks, kb, rates, seed)


def parse_json_reply(reply: str) -> tuple[Any, str | None]:
    """(object, None) for a reply that parses as a JSON object (a ```json fence is allowed), else (None, error)."""
    match = _FENCE.match(reply)
    text = match.group(1) if match else reply.strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{e.msg} at character {e.pos}"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    return obj, None


def make_teacher_llm(params: Any, cache_dir: str | Path | None, *, model: str | None = None, device: str = "auto",
                     seed: int = 0) -> LLM:
    """The LLM teacher of ``params`` (:class:`~medslm.params.SynthesizeParams`) behind the reply cache."""
    if params.teacher == "openai":
        backend: Any = OpenAIBackend(params.base_url, params.model, api_key_env=params.api_key_env,
                                     concurrency=params.concurrency, timeout_s=params.timeout_s,
                                     max_retries=params.max_retries, max_new_tokens=params.max_new_tokens,
                                     temperature=params.temperature, seed=seed)
    elif params.teacher == "transformers":
        backend = TransformersBackend(model or params.model, device=device, batch_size=params.batch_size,
                                      max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                                      trust_remote_code=params.trust_remote_code, seed=seed)
    else:
        raise ValueError(f"teacher {params.teacher!r} is not an LLM teacher; use openai or transformers")
    return LLM(backend, cache_dir)


def llm_answers(examples: list[Example], llm: LLM, parse_retries: int = 2, progress: bool = False) -> dict[str, int]:
    """Ask ``llm`` for every example; retry unparseable JSON replies; count what failed. Sets ``answer``,
    ``attempts``, ``status`` and ``teacher`` on each example."""
    conversations = {e.id: list(e.messages) for e in examples}
    pending = list(examples)
    stats = {"retried": 0, "failed": 0, "calls_before": llm.stats["calls"]}
    for attempt in range(parse_retries + 1):
        if not pending:
            break
        replies = llm.generate([conversations[e.id] for e in pending], progress=progress,
                               meta=[{"id": e.id, "attempt": attempt} for e in pending],
                               desc=f"teacher (attempt {attempt + 1})")
        still = []
        for e, reply in zip(pending, replies, strict=True):
            e.teacher, e.attempts = f"{llm.name}:{llm.model}", attempt + 1
            if e.format == "json":
                obj, error = parse_json_reply(reply)
                if obj is None:
                    conversations[e.id] += [{"role": "assistant", "content": reply}, retry_message(e.prompt_lang, error)]
                    still.append(e)
                    continue
                e.answer = json.dumps(obj, ensure_ascii=False)
            elif not reply.strip():
                conversations[e.id] += [{"role": "assistant", "content": reply},
                                        retry_message(e.prompt_lang, "empty reply")]
                still.append(e)
                continue
            else:
                e.answer = reply.strip()
        if attempt < parse_retries:
            stats["retried"] += len(still)
        pending = still
    for e in pending:
        e.status, e.answer = "failed", None
    stats["failed"] = len(pending)
    stats["calls"] = llm.stats["calls"] - stats.pop("calls_before")
    return stats
