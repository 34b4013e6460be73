"""TF-IDF + logistic regression, the CPU default: scikit-learn trains it; scoring re-implements the fitted
pipeline's transform exactly, vectorised (tested equal to scikit-learn to 1e-6), and it is saved as JSON + ``.npz``."""

from __future__ import annotations

import re
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medslm.classify.labels import clip
from medslm.classify.saved import CLASSIFIER_FILE
from medslm.rundir import atomic_path, read_json, write_json

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
