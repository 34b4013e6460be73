"""02_classify: train a classifier on the LLM labels, pick the threshold for a target precision, filter the corpus.

- :func:`load_labels`, :func:`split_labels` — the annotated sample, a stratified train/validation split, and a
  clear error when a class has too few documents;
- :func:`train_tfidf` → :class:`TfidfClassifier` — scikit-learn word (1–2) + char_wb (3–5) n-gram TF-IDF and
  logistic regression (the CPU default). Scoring uses an exact, vectorised re-implementation of the fitted
  pipeline's transform (same vocabularies, idf and weights; tested equal to scikit-learn to 1e-6), ~3–5× faster
  than ``Pipeline.predict_proba``; saved as JSON + ``.npz`` (no pickle);
- :func:`train_encoder` → :class:`EncoderClassifier` — fine-tune a sequence-classification encoder
  (e.g. xlm-roberta-base) with the transformers ``Trainer``;
- :func:`choose_threshold` — the threshold reaching the target precision on validation, and the recall there;
- :func:`gold_comparison` — the annotator and the filter against gold labels.

Filtering the whole corpus with the classifier (locally or as a datatrove job) is :mod:`medslm.filtering`.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medslm.annotate import LABELS
from medslm.rundir import atomic_path, read_json, read_jsonl, write_json

CLASSIFIER_FILE = "medslm_classifier.json"


class TooFewLabelsError(ValueError):
    """A class has too few labelled documents to train and validate a classifier."""


# --------------------------------------------------------------------------------------------------------------
# Labels and split
# --------------------------------------------------------------------------------------------------------------


def load_labels(path: str | Path) -> tuple[list[dict], dict[str, int]]:
    """The labelled documents of 01_annotate (``labels.jsonl``: ``text`` and ``label``) the classifier may train
    and validate on; unparseable ones (label null) are left out and counted, and so are documents of the toy
    world's held-out sentence families (``held_out: true``), on which 02 reports the filter apart. Returns
    ``(records, counts)`` with counts per label, ``unparseable`` and ``held_out``."""
    recs = read_jsonl(path, required=("text", "label"))
    held_out = [r for r in recs if r.get("held_out") is True]
    kept = [r for r in recs if r["label"] in LABELS and isinstance(r["text"], str) and r["text"].strip()
            and r.get("held_out") is not True]
    counts = {lab: sum(r["label"] == lab for r in kept) for lab in LABELS}
    counts["unparseable"] = sum(r["label"] is None and r.get("held_out") is not True for r in recs)
    counts["held_out"] = len(held_out)
    return kept, counts


def label_counts(labels: Iterable[str | None]) -> dict[str, int]:
    c = Counter(labels)
    return {lab: c.get(lab, 0) for lab in LABELS}


def split_labels(records: Sequence[Mapping[str, Any]], validation_fraction: float = 0.25, seed: int = 0,
                 min_per_class: int = 20) -> tuple[list[dict], list[dict]]:
    """Stratified train/validation split. Raises :class:`TooFewLabelsError` naming how many documents of each
    class there are when either class has fewer than ``min_per_class`` (at least 2 per split are needed)."""
    from sklearn.model_selection import train_test_split

    counts = label_counts(r["label"] for r in records)
    need = max(min_per_class, 2, math.ceil(2 / max(validation_fraction, 1e-9)))
    short = [lab for lab in LABELS if counts[lab] < need]
    if short:
        have = ", ".join(f"{lab}: {counts[lab]}" for lab in LABELS)
        raise TooFewLabelsError(
            f"too few labelled documents to train: {have} (need at least {need} of each class, "
            f"min_per_class={min_per_class}, validation_fraction={validation_fraction}); "
            f"short: {', '.join(short)}. Annotate a larger sample (annotate.sample_size) or check the annotator's "
            "label distribution and unparseable rate.")
    y = [r["label"] for r in records]
    train, val = train_test_split(list(records), test_size=validation_fraction, random_state=seed, stratify=y)
    return [dict(r) for r in train], [dict(r) for r in val]


def targets(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """1 for medical, 0 for not_medical."""
    return np.array([r["label"] == "medical" for r in records], dtype=np.int64)


def clip(texts: Iterable[str], max_chars: int | None) -> list[str]:
    return [t[:max_chars] if max_chars else t for t in texts]


# --------------------------------------------------------------------------------------------------------------
# TF-IDF + logistic regression (CPU default)
# --------------------------------------------------------------------------------------------------------------

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default


def char_wb_ngrams(word: str, lo: int, hi: int) -> list[str]:
    """scikit-learn's ``char_wb`` n-grams of one (lower-cased) word, padded with spaces."""
    w = f" {word} "
    n_w = len(w)
    out = []
    for n in range(lo, hi + 1):
        offset = 0
        out.append(w[offset:offset + n])
        while offset + n < n_w:
            offset += 1
            out.append(w[offset:offset + n])
        if offset == 0:  # a short word counts once
            break
    return out


def train_tfidf(texts: Sequence[str], y: Sequence[int], *, min_df: int = 2, c: float = 4.0,
                word_ngrams: tuple[int, int] = (1, 2), char_ngrams: tuple[int, int] = (3, 5),
                max_chars: int | None = 4000, seed: int = 0) -> TfidfClassifier:
    """Fit word + char_wb TF-IDF (sublinear tf, l2 per block) and a logistic regression on ``texts``/``y``
    (1 = medical). Returns a :class:`TfidfClassifier`; ``.pipeline`` holds the fitted scikit-learn pipeline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    texts = clip(texts, max_chars)
    y = np.asarray(y)
    min_df_eff = min_df if len(texts) >= 4 * min_df else 1
    word = TfidfVectorizer(ngram_range=tuple(word_ngrams), min_df=min_df_eff, sublinear_tf=True,
                           token_pattern=TOKEN_PATTERN, dtype=np.float32)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(char_ngrams), min_df=min_df_eff, sublinear_tf=True,
                           dtype=np.float32)
    pipe = make_pipeline(make_union(word, char), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    pipe.fit(texts, y)
    lr = pipe[-1]
    clf = TfidfClassifier(
        word_vocab=_vocab_list(word.vocabulary_), char_vocab=_vocab_list(char.vocabulary_),
        idf_word=word.idf_, idf_char=char.idf_, coef=lr.coef_.ravel(), intercept=float(lr.intercept_[0]),
        word_ngrams=tuple(word_ngrams), char_ngrams=tuple(char_ngrams), max_chars=max_chars,
    )
    clf.pipeline = pipe
    return clf


def _vocab_list(vocab: Mapping[str, int]) -> list[str]:
    out = [""] * len(vocab)
    for term, i in vocab.items():
        out[i] = term
    return out


class TfidfClassifier:
    """A fitted word + char TF-IDF logistic regression with a fast exact scorer.

    ``predict_proba(texts)`` gives P(medical) per text. The transform reproduces scikit-learn's (lower-case,
    default token pattern, word n-grams, char_wb n-grams, sublinear tf, smooth idf, l2 per block) with per-word
    caches and numpy; ``threshold`` is set by :func:`choose_threshold` and saved with the classifier.
    """

    backend = "tfidf"

    def __init__(self, word_vocab: list[str], char_vocab: list[str], idf_word: np.ndarray, idf_char: np.ndarray,
                 coef: np.ndarray, intercept: float, word_ngrams: tuple[int, int] = (1, 2),
                 char_ngrams: tuple[int, int] = (3, 5), max_chars: int | None = 4000, threshold: float | None = None,
                 info: dict[str, Any] | None = None):
        if tuple(word_ngrams) not in ((1, 1), (1, 2)):
            raise ValueError(f"word n-grams {word_ngrams} are not supported by the fast scorer: use (1, 1) or (1, 2)")
        self.word_vocab, self.char_vocab = list(word_vocab), list(char_vocab)
        self.word_ngrams, self.char_ngrams = tuple(word_ngrams), tuple(char_ngrams)
        self.max_chars, self.threshold = max_chars, threshold
        self.info = dict(info or {})
        self.pipeline: Any = None
        nw = len(self.word_vocab)
        self.idf_word = np.asarray(idf_word, dtype=np.float32)
        self.idf_char = np.asarray(idf_char, dtype=np.float32)
        coef = np.asarray(coef, dtype=np.float32)
        self.coef_word, self.coef_char = coef[:nw], coef[nw:]
        self.intercept = float(intercept)
        self._token_re = re.compile(TOKEN_PATTERN)
        # tokens that occur in any word feature; unigram feature of a token; bigram features keyed by token pair
        tokens: dict[str, int] = {}
        uni: list[int] = []
        bi_keys, bi_feats = [], []
        for f, term in enumerate(self.word_vocab):
            parts = term.split(" ")
            for p in parts:
                if p not in tokens:
                    tokens[p] = len(tokens)
                    uni.append(-1)
            if len(parts) == 1:
                uni[tokens[term]] = f
        self.n_tokens = max(len(tokens), 1)
        for f, term in enumerate(self.word_vocab):
            parts = term.split(" ")
            if len(parts) == 2:
                bi_keys.append(tokens[parts[0]] * self.n_tokens + tokens[parts[1]])
                bi_feats.append(f)
        self.tokens = tokens
        self.uni_feat = np.asarray(uni, dtype=np.int64)
        order = np.argsort(np.asarray(bi_keys, dtype=np.int64), kind="stable")
        self.bi_keys = np.asarray(bi_keys, dtype=np.int64)[order]
        self.bi_feats = np.asarray(bi_feats, dtype=np.int64)[order]
        self.char_index = {g: i for i, g in enumerate(self.char_vocab)}
        self._char_cache: dict[str, bytes] = {}

    # ---- scoring ------------------------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(medical) for each text (float64 array)."""
        texts = clip(texts, self.max_chars)
        n = len(texts)
        if n == 0:
            return np.zeros(0)
        z = self._word_logits(texts) + self._char_logits(texts) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def decision(self, rows: np.ndarray, cols: np.ndarray, n: int, idf: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """Σ (tf-idf / ‖tf-idf‖₂) · coef per row, from (row, column) occurrences (duplicates = counts)."""
        if len(rows) == 0:
            return np.zeros(n)
        width = np.int64(len(idf))
        keys, counts = np.unique(rows * width + cols, return_counts=True)
        r, c = keys // width, keys % width
        val = (1.0 + np.log(counts)) * idf[c]
        norm = np.sqrt(np.bincount(r, weights=val * val, minlength=n))
        dot = np.bincount(r, weights=val * coef[c], minlength=n)
        return np.divide(dot, norm, out=np.zeros(n), where=norm > 0)

    def _word_logits(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        get = self.tokens.get
        findall = self._token_re.findall
        parts, lens = [], []
        for t in texts:
            ids = [get(w, -1) for w in findall(t.lower())]
            parts.append(array("q", ids).tobytes())
            lens.append(len(ids))
        tids = np.frombuffer(b"".join(parts), dtype=np.int64)
        doc = np.repeat(np.arange(n, dtype=np.int64), lens)
        known = tids >= 0
        uf = self.uni_feat[tids[known]] if len(self.uni_feat) else np.zeros(0, dtype=np.int64)
        ok = uf >= 0
        rows, cols = [doc[known][ok]], [uf[ok]]
        if self.word_ngrams[1] >= 2 and len(tids) > 1 and len(self.bi_keys):
            a, b = tids[:-1], tids[1:]
            m = (doc[:-1] == doc[1:]) & (a >= 0) & (b >= 0)
            keys = a[m] * self.n_tokens + b[m]
            pos = np.minimum(np.searchsorted(self.bi_keys, keys), len(self.bi_keys) - 1)
            hit = self.bi_keys[pos] == keys
            rows.append(doc[:-1][m][hit])
            cols.append(self.bi_feats[pos[hit]])
        return self.decision(np.concatenate(rows), np.concatenate(cols), n, self.idf_word, self.coef_word)

    def _char_logits(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        cache, index = self._char_cache, self.char_index
        lo, hi = self.char_ngrams
        parts, lens = [], []
        for t in texts:
            total = 0
            for w in t.split():
                ids = cache.get(w)
                if ids is None:
                    ids = array("q", [j for j in map(index.get, char_wb_ngrams(w.lower(), lo, hi)) if j is not None])
                    ids = ids.tobytes()
                    if len(cache) < 500_000:
                        cache[w] = ids
                parts.append(ids)
                total += len(ids)
            lens.append(total // 8)
        cols = np.frombuffer(b"".join(parts), dtype=np.int64)
        rows = np.repeat(np.arange(n, dtype=np.int64), lens)
        return self.decision(rows, cols, n, self.idf_char, self.coef_char)

    # ---- persistence --------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``medslm_classifier.json``, ``vocab_word.json``, ``vocab_char.json`` and ``weights.npz``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "weights.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, idf_word=self.idf_word, idf_char=self.idf_char,
                     coef=np.concatenate([self.coef_word, self.coef_char]), intercept=np.array([self.intercept]))
        write_json(folder / "vocab_word.json", self.word_vocab)
        write_json(folder / "vocab_char.json", self.char_vocab)
        write_json(folder / CLASSIFIER_FILE, {
            "backend": "tfidf", "threshold": self.threshold, "max_chars": self.max_chars,
            "word_ngrams": list(self.word_ngrams), "char_ngrams": list(self.char_ngrams),
            "features": {"word": len(self.word_vocab), "char": len(self.char_vocab)}, **self.info})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TfidfClassifier:
        folder = Path(folder)
        meta = read_json(folder / CLASSIFIER_FILE)
        with np.load(folder / "weights.npz", allow_pickle=False) as w:
            arrays = {k: w[k] for k in w.files}
        info = {k: v for k, v in meta.items() if k not in ("backend", "threshold", "max_chars", "word_ngrams",
                                                             "char_ngrams", "features")}
        return cls(read_json(folder / "vocab_word.json"), read_json(folder / "vocab_char.json"), arrays["idf_word"],
                   arrays["idf_char"], arrays["coef"], float(arrays["intercept"][0]),
                   tuple(meta["word_ngrams"]), tuple(meta["char_ngrams"]), meta.get("max_chars"), meta.get("threshold"),
                   info)


# --------------------------------------------------------------------------------------------------------------
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


def load_classifier(folder: str | Path, device: str = "auto") -> TfidfClassifier | EncoderClassifier:
    """Load a classifier saved by :meth:`TfidfClassifier.save` or :meth:`EncoderClassifier.save`."""
    folder = Path(folder)
    meta_path = folder / CLASSIFIER_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: no {CLASSIFIER_FILE}; train the classifier first (02_classify)")
    backend = read_json(meta_path).get("backend")
    if backend == "tfidf":
        return TfidfClassifier.load(folder)
    if backend == "transformers":
        return EncoderClassifier.load(folder, device=device)
    raise ValueError(f"{meta_path}: unknown classifier backend {backend!r}")


def train_classifier(params: Any, train: Sequence[Mapping[str, Any]], *, device: str = "auto",
                     seed: int = 0) -> TfidfClassifier | EncoderClassifier:
    """Train the classifier of ``params`` (a :class:`~medslm.params.ClassifyParams`) on labelled records."""
    texts, y = [r["text"] for r in train], targets(train)
    t0 = time.perf_counter()
    if params.backend == "tfidf":
        clf: Any = train_tfidf(texts, y, min_df=params.tfidf_min_df, c=params.logreg_c, max_chars=params.max_chars,
                               seed=seed)
    elif params.backend == "transformers":
        clf = train_encoder(texts, y, encoder=params.encoder, epochs=params.epochs, learning_rate=params.learning_rate,
                            batch_size=params.train_batch_size, max_length=params.max_length,
                            max_chars=params.max_chars, device=device, seed=seed,
                            trust_remote_code=params.trust_remote_code)
    else:
        raise ValueError(f"unknown classify backend {params.backend!r}; known: tfidf, transformers")
    clf.info["train_seconds"] = round(time.perf_counter() - t0, 2)
    clf.info["train_documents"] = label_counts(r["label"] for r in train)
    return clf


# --------------------------------------------------------------------------------------------------------------
# Threshold at a target precision
# --------------------------------------------------------------------------------------------------------------


def choose_threshold(y_true: Sequence[int], scores: Sequence[float], target_precision: float = 0.95) -> dict[str, Any]:
    """The probability threshold that reaches ``target_precision`` on validation with the highest recall.

    Returns ``threshold``, ``precision``, ``recall``, ``reached`` (False: no threshold reaches the target; the
    threshold of the best precision is returned instead), ``kept`` and ``curve`` (precision, recall, thresholds
    as lists, for the figure). ``threshold`` keeps documents with ``score >= threshold``.
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.sum() == 0:
        raise TooFewLabelsError("the validation set has no medical document; cannot pick a threshold")
    precision, recall, thresholds = precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    ok = np.flatnonzero(p >= target_precision)
    if len(ok):
        best = ok[np.argmax(r[ok] + 1e-9 * thresholds[ok])]  # highest recall; on ties the higher threshold
        reached = True
    else:
        best = int(np.argmax(p + 1e-9 * r))
        reached = False
    thr = float(thresholds[best])
    kept = s >= thr
    return {
        "threshold": thr, "target_precision": target_precision, "reached": reached,
        "precision": round(float(p[best]), 4), "recall": round(float(r[best]), 4),
        "kept": int(kept.sum()), "validation_documents": len(y), "validation_medical": int(y.sum()),
        "confusion": confusion(y, kept),
        "curve": {"precision": precision.tolist(), "recall": recall.tolist(), "thresholds": thresholds.tolist()},
    }


def confusion(y_true: Sequence[int], kept: Sequence[bool]) -> dict[str, Any]:
    """2×2 confusion matrix, rows gold (medical, not_medical), columns kept / dropped."""
    y = np.asarray(y_true, dtype=bool)
    k = np.asarray(kept, dtype=bool)
    return {"rows": ["medical", "not_medical"], "columns": ["kept", "dropped"],
            "matrix": [[int((y & k).sum()), int((y & ~k).sum())], [int((~y & k).sum()), int((~y & ~k).sum())]]}


# --------------------------------------------------------------------------------------------------------------
# Against gold labels (the filter itself lives in medslm.filtering)
# --------------------------------------------------------------------------------------------------------------


def gold_comparison(annotator: Mapping[str, Any] | None, filter_stats: Mapping[str, Any] | None) -> list[dict]:
    """Rows for a table of the annotator (on its sample) and the classifier filter (on the full corpus) against
    gold labels, each also on the held-out sentence families alone where known: who, documents, precision,
    recall, f1. Takes ``annotation_report(...)`` and ``score_corpus(...)``."""
    rows = []
    for who, src in (("annotator (sample)", annotator), ("classifier filter (full corpus)", filter_stats)):
        for suffix, key in (("", "gold"), (", held-out families", "gold_held_out")):
            g = (src or {}).get(key)
            if g:
                rows.append({"who": who + suffix, "documents": g["n"], "precision": g["precision"],
                             "recall": g["recall"], "f1": g["f1"]})
    return rows
