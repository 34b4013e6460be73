"""A fine-tuned sequence-classification encoder (xlm-roberta-base and friends), trained with the transformers
``Trainer``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medslm.classify.labels import clip
from medslm.classify.saved import CLASSIFIER_FILE
from medslm.rundir import read_json, write_json

# Fine-tuned encoder (xlm-roberta-base and friends)
# --------------------------------------------------------------------------------------------------------------


class EncoderClassifier:
    """A sequence-classification encoder (label 1 = medical) and its tokenizer; scores in batches."""

    backend = "transformers"

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 512, batch_size: int = 32,
                 max_chars: int | None = 4000, threshold: float | None = None, info: dict[str, Any] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size, self.max_chars, self.threshold = max_length, batch_size, max_chars, threshold
        self.info = dict(info or {})

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = clip(texts, self.max_chars)
        self.model.eval()
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[start:start + self.batch_size]), truncation=True,
                                 max_length=self.max_length, padding=True, return_tensors="pt").to(self.model.device)
            enc.pop("token_type_ids", None)
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
            out.append(torch.softmax(logits, dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def save(self, folder: str | Path) -> Path:
        from medslm.models import save_model

        folder = Path(folder)
        save_model(self.model, self.tokenizer, folder)
        write_json(folder / CLASSIFIER_FILE, {"backend": "transformers", "threshold": self.threshold,
                                              "max_chars": self.max_chars, "max_length": self.max_length,
                                              "batch_size": self.batch_size, **self.info})
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", batch_size: int | None = None) -> EncoderClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from medslm.models import resolve_device

        folder = Path(folder)
        meta = read_json(folder / CLASSIFIER_FILE)
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
        model.to(resolve_device(device))
        tok = AutoTokenizer.from_pretrained(folder)
        info = {k: v for k, v in meta.items() if k not in ("backend", "threshold", "max_chars", "max_length",
                                                             "batch_size")}
        return cls(model, tok, max_length=meta.get("max_length", 512), batch_size=batch_size or meta.get("batch_size", 32),
                   max_chars=meta.get("max_chars"), threshold=meta.get("threshold"), info=info)


def train_encoder(texts: Sequence[str], y: Sequence[int], *, encoder: str = "xlm-roberta-base", epochs: float = 2.0,
                  learning_rate: float = 2e-5, batch_size: int = 16, max_length: int = 512,
                  max_chars: int | None = 4000, device: str = "auto", seed: int = 0, revision: str | None = None,
                  trust_remote_code: bool = False, logging_steps: int = 10) -> EncoderClassifier:
    """Fine-tune ``encoder`` (hub id or local folder, safetensors) for medical vs not with the ``Trainer``
    (fp32 on CPU, bf16/fp16 on GPUs). Returns an :class:`EncoderClassifier`; ``info["log_history"]`` keeps the
    training losses."""
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from medslm.models import _hub_kwargs, choose_precision, resolve_device

    dev = resolve_device(device)
    precision = choose_precision(dev)
    kwargs = _hub_kwargs(encoder, revision, trust_remote_code)
    tok = AutoTokenizer.from_pretrained(encoder, **kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder, num_labels=2, id2label={0: "not_medical", 1: "medical"}, label2id={"not_medical": 0, "medical": 1},
        use_safetensors=True, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id

    ds = Dataset.from_dict({"text": clip(texts, max_chars), "label": [int(v) for v in y]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"])
    out_dir = Path(tempfile.mkdtemp(prefix="medslm-classify-"))
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, warmup_steps=0.1, weight_decay=0.01, logging_steps=logging_steps,
        save_strategy="no", report_to=[], seed=seed, use_cpu=dev == "cpu", disable_tqdm=True,
        bf16=precision == "bf16", fp16=precision == "fp16", dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                      data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    shutil.rmtree(out_dir, ignore_errors=True)
    history = [h for h in trainer.state.log_history if "loss" in h]
    return EncoderClassifier(trainer.model, tok, max_length=max_length, batch_size=max(batch_size, 32),
                             max_chars=max_chars, info={"encoder": str(encoder), "log_history": history})
