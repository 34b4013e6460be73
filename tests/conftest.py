"""Shared fixtures: tiny tokenizers and models built locally (no network)."""

from __future__ import annotations

import os
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
