"""One text-generation interface for every step that asks a language model (annotate, synthesize, the judge).

A *backend* turns chat prompts (lists of ``{"role", "content"}`` messages) into reply strings:

- :class:`TransformersBackend` — a local causal LM, batched, through the tokenizer's chat template;
- :class:`OpenAIBackend` — any OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp, ``transformers serve``):
  async requests with bounded concurrency, a timeout per request, retries with exponential backoff, the API key
  read from an environment variable whose *name* the profile gives;
- :class:`FunctionBackend` — a plain Python function, the deterministic offline backend a step defines for the
  toy world (01_annotate's lexicon).

:class:`LLM` puts an on-disk :class:`ReplyCache` in front of a backend: every reply is appended to
``replies.jsonl`` as soon as it arrives, keyed by (backend, server URL, model, generation settings, full prompt),
so a killed run resumes without repeating a call. Only *final* replies answer later calls: a reply the caller
cannot use (empty, or rejected by its ``accept`` check, e.g. no verdict line) is kept for inspection but asked
again on the next run. Only uncached prompts reach the backend; ``LLM.stats`` counts them.

Error texts never carry the API key: the key, ``Bearer …`` values and credentials in URLs are masked before an
error is raised (a server may echo the request's headers in its error body).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from medslm.params import scrub_secrets

Messages = list[dict[str, str]]
OnReply = Callable[[int, str], None]


class LLMError(RuntimeError):
    """A backend could not produce a reply."""


class LLMServerError(LLMError):
    """The server could not be reached or kept failing (connection refused, timeouts, 5xx, 429) after retries."""


class LLMRequestError(LLMError):
    """The server rejected a request (a 4xx other than 408/409/429); retrying would not help."""


# --------------------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------------------


class Backend(Protocol):
    """What :class:`LLM` needs from a backend."""

    name: str  # backend kind, part of the cache key
    model: str  # model id / path / name, part of the cache key
    batch_size: int  # prompts handed to one ``generate`` call

    def settings(self) -> dict[str, Any]:
        """Generation settings that change replies (part of the cache key)."""
        ...

    def generate(self, prompts: Sequence[Messages], on_reply: OnReply | None = None) -> list[str]:
        """Replies to ``prompts`` in order; ``on_reply(i, reply)`` is called as each reply arrives."""
        ...


class FunctionBackend:
    """A backend made of a function ``messages -> reply`` (deterministic offline backends, fakes in tests)."""

    def __init__(self, fn: Callable[[Messages], str], name: str, model: str, batch_size: int = 64,
                 settings: dict[str, Any] | None = None):
        self.fn, self.name, self.model, self.batch_size = fn, name, model, batch_size
        self._settings = dict(settings or {})

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def generate(self, prompts: Sequence[Messages], on_reply: OnReply | None = None) -> list[str]:
        out = []
        for i, messages in enumerate(prompts):
            reply = self.fn(messages)
            out.append(reply)
            if on_reply is not None:
                on_reply(i, reply)
        return out


class TransformersBackend:
    """A local causal LM (hub id or folder, safetensors only), batched generation through the chat template.

    Pass ``model``/``tokenizer`` objects to reuse loaded ones; otherwise ``model_ref`` is loaded with
    :func:`medslm.models.load_model` (fp32 on CPU). Greedy when ``temperature == 0``.
    """

    name = "transformers"

    def __init__(self, model_ref: str | Path, *, device: str = "auto", batch_size: int = 8, max_new_tokens: int = 256,
                 temperature: float = 0.0, revision: str | None = None, trust_remote_code: bool = False,
                 seed: int = 0, model: Any = None, tokenizer: Any = None):
        from medslm.models import load_model, load_tokenizer

        self.model = str(model_ref)
        self.batch_size, self.max_new_tokens, self.temperature, self.seed = batch_size, max_new_tokens, temperature, seed
        self.tokenizer = tokenizer or load_tokenizer(model_ref, revision=revision, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # decoder-only batched generation pads on the left
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise LLMError(f"{model_ref}: the tokenizer has no chat template; use an instruct/chat model")
        self.lm = model or load_model(model_ref, device=device, revision=revision, trust_remote_code=trust_remote_code)
        self.lm.eval()

    def settings(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature}

    def generate(self, prompts: Sequence[Messages], on_reply: OnReply | None = None) -> list[str]:
        import torch

        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            texts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chunk]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
            kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
            if self.temperature > 0:
                torch.manual_seed(self.seed + start)
                kwargs.update(do_sample=True, temperature=self.temperature)
            else:
                kwargs.update(do_sample=False)
            with torch.no_grad():
                generated = self.lm.generate(**enc, **kwargs)
            new = generated[:, enc["input_ids"].shape[1]:]
            for j, reply in enumerate(self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                reply = reply.strip()
                out.append(reply)
                if on_reply is not None:
                    on_reply(start + j, reply)
        return out


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion, also from inside a running event loop (Jupyter): then in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class OpenAIBackend:
    """Any OpenAI-compatible ``/chat/completions`` endpoint, with httpx.

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``). Requests carry only
    ``model``, ``messages``, ``max_tokens``, ``temperature`` (and ``seed``): ``transformers serve`` rejects ``n``,
    ``logprobs`` and ``response_format``, so nothing relies on them. Transport errors, timeouts, 408/409/429 and 5xx
    are retried ``max_retries`` times with exponential backoff (``backoff_s * 2**attempt``, jittered), then raise
    :class:`LLMServerError` naming the URL; other 4xx raise :class:`LLMRequestError` at once.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, concurrency: int = 4,
                 timeout_s: float = 120.0, max_retries: int = 3, backoff_s: float = 1.0, max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = 0, batch_size: int | None = None):
        if not base_url:
            raise ValueError("the openai backend needs base_url, e.g. http://127.0.0.1:8000/v1")
        if not model:
            raise ValueError("the openai backend needs the model name the server serves")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = str(model)
        self.concurrency, self.timeout_s, self.max_retries, self.backoff_s = concurrency, timeout_s, max_retries, backoff_s
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        # a few rounds of concurrent requests per generate() call, so replies reach the cache steadily
        self.batch_size = batch_size or max(1, concurrency) * 4
        self.headers = {"Content-Type": "application/json"}
        self._secrets: tuple[str, ...] = ()
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise LLMError(f"api_key_env names the environment variable {api_key_env!r}, which is not set; "
                               f"export {api_key_env}=... (the key itself never goes into a profile)")
            self.headers["Authorization"] = f"Bearer {key}"
            self._secrets = (key,)

    def scrub(self, text: str) -> str:
        """``text`` without the API key, ``Bearer …`` values or ``user:password@`` in URLs (error bodies may echo
        the request headers)."""
        return re.sub(r"//[^/@\s]+@", "//***@", scrub_secrets(text, self._secrets))

    def settings(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": self.seed}

    def payload(self, messages: Messages) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": self.max_new_tokens,
                                "temperature": self.temperature}
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def generate(self, prompts: Sequence[Messages], on_reply: OnReply | None = None) -> list[str]:
        return run_sync(self._generate(list(prompts), on_reply))

    async def _generate(self, prompts: list[Messages], on_reply: OnReply | None) -> list[str]:
        import httpx

        replies: list[str | None] = [None] * len(prompts)
        sem = asyncio.Semaphore(max(1, self.concurrency))
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        async with httpx.AsyncClient(timeout=timeout, headers=self.headers) as client:

            async def one(i: int, messages: Messages) -> None:
                async with sem:
                    reply = await self._request(client, messages)
                replies[i] = reply
                if on_reply is not None:
                    on_reply(i, reply)

            try:
                async with asyncio.TaskGroup() as tg:
                    for i, messages in enumerate(prompts):
                        tg.create_task(one(i, messages))
            except ExceptionGroup as eg:  # the first failure cancels the rest; raise it plainly
                first = eg.exceptions[0]
                while isinstance(first, ExceptionGroup):
                    first = first.exceptions[0]
                raise first from None
        return [r if r is not None else "" for r in replies]

    async def _request(self, client: Any, messages: Messages) -> str:
        import httpx

        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff_s * 2 ** (attempt - 1)
                await asyncio.sleep(delay * (0.75 + 0.5 * random.random()))
            try:
                resp = await client.post(self.url, json=self.payload(messages))
            except httpx.TimeoutException as e:
                last = f"timed out after {self.timeout_s:g} s ({type(e).__name__})"
                continue
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if resp.status_code in (408, 409, 429) or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code >= 400:
                hint = " (check the key in the environment variable api_key_env names)" if resp.status_code in (
                    401, 403) else ""
                raise LLMRequestError(self.scrub(f"{self.url} rejected the request (HTTP {resp.status_code}){hint}: "
                                                 f"{resp.text[:300]}"))
            try:
                content = resp.json()["choices"][0]["message"].get("content")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                raise LLMRequestError(self.scrub(f"{self.url} answered without choices[0].message: "
                                                 f"{resp.text[:300]}")) from None
            return (content or "").strip()
        raise LLMServerError(self.scrub(f"{self.url}: no reply after {self.max_retries + 1} attempt(s); "
                                        f"last error: {last}"))


# --------------------------------------------------------------------------------------------------------------
# Cache and the LLM front
# --------------------------------------------------------------------------------------------------------------


def cache_key(backend: str, model: str, settings: dict[str, Any], messages: Messages, url: str = "") -> str:
    """sha256 of (backend, server URL, model, generation settings, full prompt). The prompt holds the prompt
    version's template and the (truncated) document, so the key changes with either."""
    blob = json.dumps([backend, url, model, settings, messages], sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


class ReplyCache:
    """Append-only JSON Lines cache of replies in ``folder/replies.jsonl``.

    Each reply is written and flushed as it arrives, so a run killed at any point keeps every finished reply; a
    line cut off by the kill is ignored on the next load (``skipped_lines``). Replies stored with
    ``final: false`` (unusable ones) are kept in the file but never answer a lookup (``not_final`` counts them).
    """

    FILE = "replies.jsonl"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / self.FILE
        self.replies: dict[str, str] = {}
        self.skipped_lines = 0
        self.not_final = 0
        if self.path.exists():
            with self.path.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        if rec.get("final", True) and isinstance(rec["reply"], str):
                            self.replies[rec["key"]] = rec["reply"]
                        else:
                            self.not_final += 1
                    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                        self.skipped_lines += 1
            self._repair_tail()
        self._fh = None

    def _repair_tail(self) -> None:
        """A kill mid-write can leave a last line without newline; end it so the next append starts cleanly."""
        with self.path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
        if last != b"\n":
            with self.path.open("ab") as f:
                f.write(b"\n")

    def __len__(self) -> int:
        return len(self.replies)

    def __contains__(self, key: str) -> bool:
        return key in self.replies

    def get(self, key: str) -> str | None:
        return self.replies.get(key)

    def put(self, key: str, reply: str, final: bool = True, **meta: Any) -> None:
        """Append a reply; a reply that is not ``final`` is recorded but will be asked again."""
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
        record = {"key": key, "reply": reply, **meta} if final else {"key": key, "reply": reply, "final": False, **meta}
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        if final:
            self.replies[key] = reply
        else:
            self.not_final += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class LLM:
    """A backend behind an optional reply cache.

    ``generate(prompts)`` returns one reply per prompt; cached prompts are answered from disk, the others go to the
    backend in chunks of ``backend.batch_size`` and are cached one by one as they arrive. ``stats`` counts
    ``requested``, ``cached`` (answered from the cache), ``calls`` (prompts sent to the backend) and
    ``backend_seconds``. On a backend failure everything cached so far stays, and the error says so.

    ``accept(reply) -> bool`` says whether a reply is usable (default: not empty); unusable replies are cached as
    not final, so the next run asks again (a fixed server or prompt then gets its chance); ``stats["unusable"]``
    counts them.
    """

    def __init__(self, backend: Backend, cache_dir: str | Path | None = None,
                 accept: Callable[[str], bool] | None = None):
        self.backend = backend
        self.cache = ReplyCache(cache_dir) if cache_dir is not None else None
        self.accept = accept or (lambda reply: bool(reply.strip()))
        self.stats = {"requested": 0, "cached": 0, "calls": 0, "unusable": 0, "backend_seconds": 0.0}

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model

    def key(self, messages: Messages) -> str:
        return cache_key(self.backend.name, self.backend.model, self.backend.settings(), messages,
                         url=str(getattr(self.backend, "base_url", "") or ""))

    def generate(self, prompts: Sequence[Messages], *, meta: Sequence[dict[str, Any]] | None = None,
                 progress: bool = False, desc: str = "LLM", accept: Callable[[str], bool] | None = None) -> list[str]:
        """Replies to ``prompts``; ``meta[i]`` (e.g. document id, prompt version) is stored beside each cached reply;
        ``accept`` overrides the usable-reply check for this call."""
        accept = accept or self.accept
        prompts = list(prompts)
        keys = [self.key(m) for m in prompts]
        replies: list[str | None] = [None] * len(prompts)
        todo: list[int] = []
        for i, k in enumerate(keys):
            hit = self.cache.get(k) if self.cache is not None else None
            if hit is not None:
                replies[i] = hit
            else:
                todo.append(i)
        self.stats["requested"] += len(prompts)
        self.stats["cached"] += len(prompts) - len(todo)
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"{desc} ({len(prompts) - len(todo)} cached)")
        t0 = time.perf_counter()
        try:
            size = max(1, int(self.backend.batch_size))
            for start in range(0, len(todo), size):
                chunk = todo[start:start + size]
                self.stats["calls"] += len(chunk)

                def on_reply(j: int, reply: str, chunk: list[int] = chunk) -> None:
                    i = chunk[j]
                    if replies[i] is not None:  # already recorded (a backend may report and return a reply)
                        return
                    replies[i] = reply
                    usable = accept(reply)
                    self.stats["unusable"] += not usable
                    if self.cache is not None:
                        self.cache.put(keys[i], reply, final=usable, backend=self.backend.name,
                                       model=self.backend.model, **(meta[i] if meta is not None else {}))
                    if bar is not None:
                        bar.update(1)

                out = self.backend.generate([prompts[i] for i in chunk], on_reply=on_reply)
                for j, reply in enumerate(out):
                    on_reply(j, reply)
        except LLMError as e:
            if self.cache is not None:
                raise type(e)(f"{e} — {len(self.cache)} replies cached so far are kept in {self.cache.path}; "
                              "run again to resume") from e
            raise
        finally:
            self.stats["backend_seconds"] += time.perf_counter() - t0
            if bar is not None:
                bar.close()
        return [r if r is not None else "" for r in replies]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
