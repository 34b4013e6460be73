"""The classifier of a profile: trained by its backend, saved beside its metadata file, loaded back by kind."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medslm.classify.labels import label_counts, targets
from medslm.rundir import read_json

if TYPE_CHECKING:  # the two kinds import CLASSIFIER_FILE from here; the functions import them when called
    from medslm.classify.encoder import EncoderClassifier
    from medslm.classify.tfidf import TfidfClassifier

CLASSIFIER_FILE = "medslm_classifier.json"


def load_classifier(folder: str | Path, device: str = "auto") -> TfidfClassifier | EncoderClassifier:
    """Load a classifier saved by :meth:`TfidfClassifier.save` or :meth:`EncoderClassifier.save`."""
    from medslm.classify.encoder import EncoderClassifier
    from medslm.classify.tfidf import TfidfClassifier

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
    from medslm.classify.encoder import train_encoder
    from medslm.classify.tfidf import train_tfidf

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
