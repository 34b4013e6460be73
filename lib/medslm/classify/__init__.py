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

One module per job — ``labels``, ``tfidf``, ``encoder``, ``saved`` (train, save, load by kind) and ``metrics``
(threshold, confusion, gold) — and every name above is importable from ``medslm.classify``.
"""

from medslm.classify.encoder import EncoderClassifier, train_encoder
from medslm.classify.labels import TooFewLabelsError, clip, label_counts, load_labels, split_labels, targets
from medslm.classify.metrics import choose_threshold, confusion, gold_comparison
from medslm.classify.saved import CLASSIFIER_FILE, load_classifier, train_classifier
from medslm.classify.tfidf import TOKEN_PATTERN, TfidfClassifier, char_wb_ngrams, train_tfidf

__all__ = [
    "TooFewLabelsError",
    "load_labels",
    "label_counts",
    "split_labels",
    "targets",
    "clip",
    "TOKEN_PATTERN",
    "char_wb_ngrams",
    "train_tfidf",
    "TfidfClassifier",
    "EncoderClassifier",
    "train_encoder",
    "CLASSIFIER_FILE",
    "load_classifier",
    "train_classifier",
    "choose_threshold",
    "confusion",
    "gold_comparison",
]
