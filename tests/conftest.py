"""Shared fixtures: tiny tokenizers and models built locally (no network)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TEXTS = [
    "Paris is the capital of France.",
    "Die Hauptstadt von Frankreich ist Paris.",
    "Metformin is used to treat type 2 diabetes.",
    "Das Medikament Metformin wird eingesetzt gegen Typ-2-Diabetes.",
    "The heart pumps blood through the body.",
    "Accept all cookies to continue reading.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from medslm.toyworld.tokenizer import train_tokenizer

    return train_tokenizer(SAMPLE_TEXTS, vocab_size=400)


def build_tiny_model_dir(path: Path, tokenizer, seed: int = 0, **sizes) -> Path:
    """Save a randomly initialised tiny Llama and its tokenizer as an HF folder."""
    from medslm.models import save_model
    from medslm.toyworld.tinymodel import new_tiny_llama

    sizes = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, **sizes}
    model = new_tiny_llama(tokenizer, seed=seed, **sizes)
    return save_model(model, tokenizer, path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A tiny random Llama (hidden 32, 2 layers) with the toy tokenizer, as an HF folder."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", tiny_tokenizer)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served_model(tiny_model_dir, tmp_path_factory):
    """`transformers serve` with the tiny random model on a free port (OpenAI-compatible; its replies are gibberish)."""
    missing = [m for m in ("fastapi", "uvicorn", "openai") if find_spec(m) is None]
    if missing:
        pytest.skip(f"transformers serve needs {', '.join(missing)} (pip install -e '.[dev]')")
    exe = Path(sys.executable).parent / "transformers"
    port = free_port()
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "hf_cache").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf_cache"), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    log_path = tmp / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen([str(exe), "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"transformers serve not ready after 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"base_url": f"http://127.0.0.1:{port}/v1", "model": str(tiny_model_dir)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture()
def one_thread():
    """Tiny models run fastest on one torch thread, and stay fast when other jobs share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
