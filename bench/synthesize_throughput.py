"""Throughput of 05_synthesize: the programmatic path end to end, and the openai teacher against a local
``transformers serve`` at concurrency 1 vs 8 (same prompts, no reply cache, in one run).

Prints one JSON line per figure:

* ``programmatic`` — the whole step with the smoke parameters (setup, teacher, filters, pairs, save): examples
  per second and the time of each stage;
* ``openai_concurrency`` — examples per second of the openai teacher at concurrency 1 and 8 and their ratio,
  against ``transformers serve`` with a tiny random Llama (``--model`` to serve another local folder).

    .venv/bin/python bench/synthesize_throughput.py [--prompts 32] [--max-new-tokens 16] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def programmatic(seed: int) -> dict:
    from medslm.params import SynthesizeParams
    from medslm.rundir import RunDir
    from medslm.synthesize import recipe

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synth, metrics = recipe.run_step(SynthesizeParams(), RunDir(tmp).synthesize, seed=seed)
        seconds = time.perf_counter() - t0
    return {"figure": "programmatic", "examples": len(synth.examples), "seconds": round(seconds, 2),
            "examples_per_s": round(len(synth.examples) / seconds, 1), "stages_s": metrics["timings"],
            "sft_train": metrics["counts"]["sft"]["train"], "dpo_train": metrics["counts"]["dpo"]["train"]}


def tiny_model(folder: Path) -> Path:
    from medslm.models import save_model
    from medslm.toyworld.tinymodel import new_tiny_llama
    from medslm.toyworld.tokenizer import train_tokenizer

    texts = ["Metformin is used to treat type 2 diabetes.", "Das Medikament Metformin hilft bei Diabetes."] * 50
    tokenizer = train_tokenizer(texts, vocab_size=400)
    model = new_tiny_llama(tokenizer, seed=0, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    return save_model(model, tokenizer, folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (tmp / "hf_cache").mkdir(exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf_cache"), "TOKENIZERS_PARALLELISM": "false"}
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", str(model), "--host",
                             "127.0.0.1", "--port", str(port), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited: {(tmp / 'serve.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("transformers serve not ready after 180 s")


def openai_concurrency(prompts: int, max_new_tokens: int, model: Path | None, seed: int) -> dict:
    from medslm.params import SynthesizeParams
    from medslm.synthesize import recipe
    from medslm.synthesize.teachers import llm_answers

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        served = model or tiny_model(tmp_path / "model")
        proc, url = serve(served, tmp_path)
        try:
            rates = {}
            for concurrency in (1, 8):
                params = SynthesizeParams(teacher="openai", base_url=url, model=str(served), concurrency=concurrency,
                                          max_new_tokens=max_new_tokens, parse_retries=0, examples_per_cell=1,
                                          formats=["text"])
                examples = recipe.setup(params, seed).examples[:prompts]
                llm = recipe.make_teacher_llm(params, None)  # no cache: every prompt is a request
                llm_answers(examples[:2], llm, 0)  # warm-up
                t0 = time.perf_counter()
                llm_answers(examples, llm, 0)
                rates[concurrency] = len(examples) / (time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"figure": "openai_concurrency", "prompts": prompts, "max_new_tokens": max_new_tokens,
            "model": "tiny random Llama" if model is None else str(model),
            "examples_per_s_c1": round(rates[1], 2), "examples_per_s_c8": round(rates[8], 2),
            "ratio_c8_over_c1": round(rates[8] / rates[1], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32, help="prompts sent at each concurrency")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--model", type=Path, default=None, help="local model folder to serve (default: a tiny random Llama)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-server", action="store_true", help="only the programmatic figure")
    args = ap.parse_args()
    print(json.dumps(programmatic(args.seed)), flush=True)
    if not args.skip_server:
        print(json.dumps(openai_concurrency(args.prompts, args.max_new_tokens, args.model, args.seed)), flush=True)


if __name__ == "__main__":
    main()
