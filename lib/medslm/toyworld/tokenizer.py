"""A byte-level BPE tokenizer trained on the toy world, with chat special tokens and a chat template.

The chat template wraps assistant replies in ``{% generation %}`` markers so trl's ``assistant_only_loss`` works.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, SYSTEM, USER, ASSISTANT, END]

# Role tags are followed by a space, not a newline: with a byte-level BPE the first word of a turn then gets the same
# token ("Ġword") as inside running text, so what the model knows from documents carries over into chat answers.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}" + SYSTEM + " {{ message['content'] }}" + END + "\n"
    "{% elif message['role'] == 'user' %}" + USER + " {{ message['content'] }}" + END + "\n"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT +
    "{% generation %} {{ message['content'] }}" + END + "{% endgeneration %}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2):
    """Train a byte-level BPE on ``texts``; return a ``PreTrainedTokenizerFast`` with chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT, END],
        model_max_length=1024,
    )
    # The tiny model is pretrained with BOS before every document (training.tokenize_documents), so the tokenizer
    # adds BOS by default, as Llama's does: lm-eval (add_bos_token=None) and medslm's scorer then score contexts
    # the way the model was trained.
    fast.add_bos_token = True
    fast.chat_template = CHAT_TEMPLATE
    return fast


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn (``<|end|>`` and EOS), for ``generation_config.eos_token_id``."""
    return [tokenizer.convert_tokens_to_ids(END), tokenizer.eos_token_id]


def save_tokenizer(tokenizer, path: str | Path) -> Path:
    path = Path(path)
    tokenizer.save_pretrained(path)
    return path
