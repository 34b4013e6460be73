"""Agreement with gold of the annotator modes on the toy world: the local model generating its reply
(``transformers``), the same model scoring the verdict as a choice (``loglik``), and the offline ``lexicon``.

Needs a run whose 00_prepare built the toy world (``medslm run params/smoke.yaml --steps prepare``).
Prints one JSON line per mode: documents, unparseable rate, precision/recall/F1/accuracy against the corpus's gold
labels (unparseable counts as not medical), mean P(medical) per gold class (loglik), documents per second.

    python bench/annotate_modes.py outputs/smoke --documents 200
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a run directory with 00_prepare done (toy world)")
    ap.add_argument("--documents", type=int, default=200, help="documents sampled (seeded, stratified) and labelled")
    ap.add_argument("--language", default="de", help="prompt language")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="transformers mode: tokens generated per reply")
    ap.add_argument("--modes", default="lexicon,loglik,transformers")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from medslm.annotate import annotate_documents, annotation_report, make_llm, sample_documents
    from medslm.params import AnnotateParams
    from medslm.rundir import RunDir

    run = RunDir(args.run_dir)
    docs, _ = sample_documents(run.prepare.corpus, args.documents, args.seed, stratify_by_language=True)
    for mode in args.modes.split(","):
        params = AnnotateParams(backend=mode, max_new_tokens=args.max_new_tokens, quality_score=False)
        llm = make_llm(params, None, run_dir=run.path, device="cpu", seed=args.seed)
        t0 = time.perf_counter()
        labels, stats = annotate_documents(docs, llm, language=args.language, quality_score=False)
        seconds = time.perf_counter() - t0
        report = annotation_report(labels, stats)
        gold = report["gold"]
        line = {"figure": "annotate_mode", "mode": mode, "model": llm.model, "documents": len(labels),
                "unparseable_rate": report["unparseable_rate"], "precision": gold["precision"],
                "recall": gold["recall"], "f1": gold["f1"], "accuracy": gold["accuracy"],
                "medical_share": round(report["label_distribution"]["medical"] / len(labels), 4),
                "docs_per_s": round(len(labels) / seconds, 2)}
        if mode == "loglik":
            for cls in ("medical", "not_medical"):
                ps = [r["p_medical"] for r in labels if r.get("gold") == cls]
                line[f"mean_p_medical_gold_{cls}"] = round(sum(ps) / len(ps), 4) if ps else None
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
