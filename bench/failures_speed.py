"""Time the failure analysis of 08 on synthetic answers built from the toy world's fact sentences.

Prints one JSON line per figure. Run: `python bench/failures_speed.py [N_ANSWERS]` (default 2,000).
Target (issue 12): the step ≤ 30 s on 2 cores, lingua loaded once and restricted to the languages needed.
The answers are German (3–6 fact sentences) from four variants; a quarter carry an English sentence, some loop,
some are JSON (a tenth of them broken), so every detector does its real work.
"""

from __future__ import annotations

import json
import random
import sys
import time


def synthetic_items(n: int, seed: int = 0) -> list:
    from medslm.failures import FailureItem
    from medslm.toyworld.knowledge import load_knowledge, render

    kb = load_knowledge()
    pairs = [(render(rel.templates["de"][i], f, "de"), render(rel.templates["en"][i], f, "en"))
             for rel in kb.relations for f in rel.facts for i in range(min(len(rel.templates["de"]), len(rel.templates["en"])))]
    schema = {"type": "object", "required": ["diagnosis", "drug"],
              "properties": {"diagnosis": {"type": "string"}, "drug": {"type": "string"}}}
    rng = random.Random(seed)
    items = []
    for k in range(n):
        variant = ("instruct", "cpt", "sft", "dpo")[k % 4]
        if k % 10 == 9:
            answer = '{"diagnosis": "Gicht", "drug": "Allopurinol"}' if rng.random() > 0.1 else '{"diagnosis": "Gicht",'
            items.append(FailureItem(variant, "extract", "de", "Gib JSON zurück.", answer, None, "json", schema))
            continue
        chosen = rng.sample(pairs, rng.randint(3, 6))
        sentences = [de for de, _ in chosen]
        injected = rng.random() < 0.25
        if injected:
            position = rng.randrange(len(sentences))
            sentences[position] = chosen[position][1]
        if rng.random() < 0.05:
            sentences = sentences[:1] * 6
        items.append(FailureItem(variant, "qa", "de", "Frage?", " ".join(sentences), chosen[0][0],
                                 truncated=rng.random() < 0.03, id="english-injected" if injected else "clean"))
    return items


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    t0 = time.perf_counter()
    from medslm.failures import FailureAnalysisParams, analyse_failures, language_detector

    import_s = time.perf_counter() - t0
    items = synthetic_items(n)
    t0 = time.perf_counter()
    detector = language_detector(("de", "en"))
    detector.top("Der Patient wurde entlassen.")  # lingua loads its models at the first detection
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = analyse_failures(items, FailureAnalysisParams())
    table = report.table()
    worst = {mode: report.worst(mode) for mode in ("language", "verbosity", "repetition", "invalid_json")}
    analysis_s = time.perf_counter() - t0
    print(json.dumps({"figure": "import_seconds", "value": round(import_s, 2)}))
    print(json.dumps({"figure": "lingua_load_seconds", "value": round(load_s, 2), "languages": ["de", "en"]}))
    print(json.dumps({"figure": "analysis_seconds", "value": round(analysis_s, 2), "answers": n}))
    print(json.dumps({"figure": "items_per_second", "value": round(n / analysis_s, 1)}))
    print(json.dumps({"figure": "step_seconds", "value": round(import_s + load_s + analysis_s, 2), "target_max": 30}))
    print(json.dumps({"figure": "language_mixed_rate", **{v: round(float(x), 3) for v, x in table["language_mixed"].items()}}))
    gold = [r.item.id == "english-injected" for r in report.results if r.language is not None]
    found = [r.language.mixed for r in report.results if r.language is not None]
    tp = sum(g and f for g, f in zip(gold, found, strict=True))
    print(json.dumps({"figure": "injected_english_answer_level", "precision": round(tp / max(sum(found), 1), 3),
                      "recall": round(tp / max(sum(gold), 1), 3), "injected": sum(gold)}))
    print(json.dumps({"figure": "worst_examples", **{m: len(w) for m, w in worst.items()}}))


if __name__ == "__main__":
    main()
