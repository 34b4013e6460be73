"""The tiny Llama of the toy world: config and a freshly initialised model."""

from __future__ import annotations

from typing import Any


def tiny_llama_config(tokenizer: Any, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                      intermediate_size: int = 384, max_positions: int = 512):
    """A ``LlamaConfig`` sized for CPU training in seconds; ids taken from the tokenizer; tied embeddings."""
    from transformers import LlamaConfig

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
    )


def new_tiny_llama(tokenizer: Any, seed: int = 0, **sizes: Any):
    """A randomly initialised tiny ``LlamaForCausalLM`` (fp32), deterministic for a seed."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, **sizes))
