"""Labelling documents: the annotator backend of a profile behind the reply cache, and the loop that labels and
times a sample."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medslm.annotate.offline import lexicon_backend
from medslm.annotate.rubric import LABELS, build_messages, parse_reply, prompt_version
from medslm.choice_backend import ChoiceBackend
from medslm.lexicon import Lexicon, load_lexicon
from medslm.llm import LLM, OpenAIBackend, TransformersBackend
from medslm.rundir import RunDir


def run_lexicon(run_dir: str | Path | None) -> Lexicon | None:
    """The lexicon 00_prepare derived for the toy world (``lexicon.yaml``), or None (then the packaged one)."""
    if run_dir is None:
        return None
    path = RunDir(run_dir).prepare.lexicon
    return load_lexicon(path) if path.is_file() else None


def make_llm(params: Any, cache_dir: str | Path | None, *, run_dir: str | Path | None = None, device: str = "auto",
             seed: int = 0) -> LLM:
    """The annotator of ``params`` (an :class:`~medslm.params.AnnotateParams`) behind the reply cache.

    lexicon: offline, the lexicon 00_prepare derived (toy world) or else the packaged one; transformers (writes a reply) and loglik (the verdict as a choice scored by log-likelihood,
    :class:`~medslm.choice_backend.ChoiceBackend`): ``params.model`` or 00_prepare's model (``run_dir``) loaded
    locally; openai: ``params.base_url`` + ``params.model`` with the key from the env var ``params.api_key_env``.
    """
    if params.backend == "lexicon":
        backend: Any = lexicon_backend(params.quality_score, lexicon=run_lexicon(run_dir))
    elif params.backend in ("transformers", "loglik"):
        from medslm.models import resolve_model  # torch: only for these backends

        ref = resolve_model(params.model, run_dir, trust_remote_code=params.trust_remote_code)
        local = {"device": device, "batch_size": params.batch_size, "revision": ref.revision,
                 "trust_remote_code": ref.trust_remote_code}
        if params.backend == "loglik":
            backend = ChoiceBackend(ref.ref, choices=LABELS, **local)
        else:
            backend = TransformersBackend(ref.ref, max_new_tokens=params.max_new_tokens,
                                          temperature=params.temperature, seed=seed, **local)
    elif params.backend == "openai":
        backend = OpenAIBackend(params.base_url, params.model, api_key_env=params.api_key_env,
                                concurrency=params.concurrency, timeout_s=params.timeout_s,
                                max_retries=params.max_retries, max_new_tokens=params.max_new_tokens,
                                temperature=params.temperature, seed=seed)
    else:
        raise ValueError(f"unknown annotate backend {params.backend!r}; known: lexicon, transformers, loglik, openai")
    return LLM(backend, cache_dir)


def doc_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def annotate_documents(docs: Sequence[Mapping[str, Any]], llm: LLM, *, language: str = "de", max_chars: int = 2000,
                       quality_score: bool = True, progress: bool = False,
                       keep_fields: Iterable[str] = ("lang", "kind", "label", "held_out")) -> tuple[list[dict], dict[str, Any]]:
    """Label ``docs`` with ``llm``. Returns ``(labels, stats)``.

    Each label: ``id``, ``text``, ``label`` (medical | not_medical | None), ``status`` (ok | unparseable),
    ``reason``, ``quality``, ``justification``, ``reply`` (raw), ``prompt_version``, ``backend``, ``model``,
    ``doc_sha``, plus ``lang`` and, where the corpus has one, the gold label as ``gold`` (and ``kind``,
    ``held_out``).
    stats: documents, cached, calls (sent to the backend), seconds, docs_per_s (all documents / wall time) and
    backend_docs_per_s (generated documents / backend time).
    """
    version = prompt_version(language, quality_score)
    prompts = [build_messages(d["text"], language, max_chars, quality_score) for d in docs]
    meta = [{"id": d.get("id"), "prompt_version": version, "doc_sha": doc_hash(d["text"])} for d in docs]
    before = dict(llm.stats)
    t0 = time.perf_counter()
    replies = llm.generate(prompts, meta=meta, progress=progress, desc="annotate",
                           accept=lambda reply: parse_reply(reply)["status"] == "ok")  # unparseable: asked again
    seconds = time.perf_counter() - t0
    labels = []
    keep = tuple(keep_fields)
    for d, reply, m in zip(docs, replies, meta, strict=True):
        parsed = parse_reply(reply)
        rec: dict[str, Any] = {"id": d.get("id"), "text": d["text"], **parsed, "reply": reply,
                               "prompt_version": version, "backend": llm.name, "model": llm.model,
                               "doc_sha": m["doc_sha"]}
        for f in keep:
            if f in d:
                rec["gold" if f == "label" else f] = d[f]
        labels.append(rec)
    calls = llm.stats["calls"] - before["calls"]
    backend_s = llm.stats["backend_seconds"] - before["backend_seconds"]
    stats = {"documents": len(docs), "cached": llm.stats["cached"] - before["cached"], "calls": calls,
             "seconds": round(seconds, 3), "docs_per_s": round(len(docs) / seconds, 1) if seconds > 0 else None,
             "backend_docs_per_s": round(calls / backend_s, 1) if calls and backend_s > 0 else None,
             "prompt_version": version, "backend": llm.name, "model": llm.model}
    return labels, stats
