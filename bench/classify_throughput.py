"""Documents per second per CPU core of 02_classify's CPU filter (word + char TF-IDF + logistic regression), on
toy-world documents, and the projected core-hours for DeFineMed's 428 M German FineWeb2 documents.

One process, one thread (BLAS/OpenMP pinned to 1 before numpy loads), so docs/s is per core. The classifier is
trained as the recipe does it: the lexicon annotator labels a sample, the TF-IDF model learns those labels.
Prints one JSON line per figure:

* ``corpus`` — documents scored and their mean length in characters;
* ``scorer_docs_per_s_per_core`` — ``TfidfClassifier.predict_proba`` over all documents in batches (cold
  per-word caches at the start, so this includes warm-up), and scikit-learn's ``Pipeline.predict_proba`` on a
  subset in the same run, with the ratio;
* ``filter_docs_per_s_per_core`` — ``score_corpus`` end to end: read JSONL, score, write scores.parquet and
  filtered.jsonl;
* ``projected_core_hours_428M`` — 428 M documents at the end-to-end rate, as measured on toy documents and
  scaled to FineWeb2-length documents (cost taken as proportional to the characters read, capped by max_chars).

    .venv/bin/python bench/classify_throughput.py [--documents 100000] [--train 2000] [--fineweb-chars 3000]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

DEFINEMED_DOCUMENTS = 428_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--documents", type=int, default=100_000, help="toy documents to score (>= 100k for the figure)")
    ap.add_argument("--train", type=int, default=2000, help="documents the lexicon labels for training")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--sklearn-documents", type=int, default=10_000, help="subset scored by scikit-learn for the ratio")
    ap.add_argument("--fineweb-chars", type=int, default=3000,
                    help="assumed mean characters of a FineWeb2 document, for the scaled projection")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from medslm.annotate import annotate_documents, lexicon_backend
    from medslm.classify import train_tfidf
    from medslm.filtering import score_corpus
    from medslm.llm import LLM
    from medslm.params import ClassifyParams
    from medslm.rundir import write_jsonl
    from medslm.toyworld.corpus import CorpusSpec, generate_corpus

    p = ClassifyParams()
    t0 = time.perf_counter()
    docs = list(generate_corpus(CorpusSpec(args.documents + args.train, seed=args.seed)))
    train_docs, docs = docs[:args.train], docs[args.train:]
    gen_s = time.perf_counter() - t0
    labels, _ = annotate_documents(train_docs, LLM(lexicon_backend()), language="de")
    y = [r["label"] == "medical" for r in labels]
    t0 = time.perf_counter()
    clf = train_tfidf([r["text"] for r in labels], y, min_df=p.tfidf_min_df, c=p.logreg_c, max_chars=p.max_chars,
                      seed=args.seed)
    train_s = time.perf_counter() - t0
    texts = [d["text"] for d in docs]
    mean_chars = float(np.mean([len(t) for t in texts]))
    print(json.dumps({"figure": "corpus", "documents": len(texts), "mean_chars": round(mean_chars, 1),
                      "train_documents": len(labels), "features": len(clf.word_vocab) + len(clf.char_vocab),
                      "generate_seconds": round(gen_s, 1), "train_seconds": round(train_s, 2)}))

    # --- scorer alone ---------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    scores = np.concatenate([clf.predict_proba(texts[i:i + args.batch_size])
                             for i in range(0, len(texts), args.batch_size)])
    fast_s = time.perf_counter() - t0
    fast_rate = len(texts) / fast_s
    sub = texts[:args.sklearn_documents]
    t0 = time.perf_counter()
    ref = np.concatenate([clf.pipeline.predict_proba(sub[i:i + args.batch_size])[:, 1]
                          for i in range(0, len(sub), args.batch_size)])
    sk_rate = len(sub) / (time.perf_counter() - t0)
    print(json.dumps({"figure": "scorer_docs_per_s_per_core", "medslm": round(fast_rate, 1),
                      "sklearn_pipeline": round(sk_rate, 1), "ratio": round(fast_rate / sk_rate, 2),
                      "max_abs_diff": float(np.abs(ref - scores[:len(sub)]).max()), "target_min": 5000}))

    # --- end to end: JSONL in, Parquet + JSONL out ----------------------------------------------------------
    clf.threshold = 0.5
    with tempfile.TemporaryDirectory(prefix="medslm-bench-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        write_jsonl(corpus, docs)
        fresh = type(clf)(clf.word_vocab, clf.char_vocab, clf.idf_word, clf.idf_char,
                          np.concatenate([clf.coef_word, clf.coef_char]), clf.intercept, max_chars=clf.max_chars,
                          threshold=0.5)  # cold caches again
        stats = score_corpus(fresh, corpus, scores_path=Path(tmp) / "scores.parquet",
                             filtered_path=Path(tmp) / "filtered.jsonl", batch_size=args.batch_size)
    e2e = stats["docs_per_s"]
    print(json.dumps({"figure": "filter_docs_per_s_per_core", "value": e2e, "scoring_only": stats["scoring_docs_per_s"],
                      "kept_fraction": stats["kept_fraction"], "target_min": 5000}))

    # --- projection -----------------------------------------------------------------------------------------
    scale = min(args.fineweb_chars, p.max_chars) / mean_chars
    print(json.dumps({
        "figure": "projected_core_hours_428M", "documents": DEFINEMED_DOCUMENTS,
        "at_toy_length": round(DEFINEMED_DOCUMENTS / e2e / 3600, 1),
        "at_fineweb_length": round(DEFINEMED_DOCUMENTS / (e2e / scale) / 3600, 1),
        "assumed_fineweb_chars": args.fineweb_chars, "max_chars": p.max_chars,
        "note": "cost assumed proportional to characters read; documents are cut at max_chars",
    }))


if __name__ == "__main__":
    main()
