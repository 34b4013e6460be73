"""Run the filters over the teacher's answers, count what each removed (the funnel), and measure every filter
against the injected faults (ground truth)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from jsonschema import Draft202012Validator

from medslm.llm import LLM
from medslm.synthesize.faults import FAULT_KINDS
from medslm.synthesize.filters import FILTERS, LanguageFilter, dedup_verdicts, json_verdict, length_verdict
from medslm.synthesize.grid import Example
from medslm.synthesize.judge import judge_scores
from medslm.synthesize.tasks import Task

# the filter meant to catch each fault
TARGET_FILTER = {"wrong_language": "language", "mixed_language": "language", "verbose": "length",
                 "invalid_json": "json", "near_duplicate": "dedup", "wrong_fact": "judge"}


def apply_filters(examples: list[Example], params: Any, tasks: dict[str, Task], schemas: dict[str, dict],
                  language_filter: LanguageFilter | None = None, judge: LLM | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Set ``verdicts`` on every example (see :mod:`medslm.synthesize.filters`) and return the funnel."""
    validators = {name: Draft202012Validator(schema) for name, schema in schemas.items()}
    answered = [e for e in examples if e.status == "ok"]
    for e in examples:
        e.verdicts = dict.fromkeys(FILTERS, "n/a")
    for e in answered:
        if params.filter_json:
            e.verdicts["json"] = json_verdict(e, validators[e.task])
        if params.filter_length:
            e.verdicts["length"] = length_verdict(e, tasks[e.task], params.length_slack)
    if params.filter_language and language_filter is not None:
        for e, verdict in zip(answered, language_filter.verdicts(answered), strict=True):
            e.verdicts["language"] = verdict
    survivors = [e for e in answered if "removed" not in e.verdicts.values()]
    if params.filter_dedup:
        verdicts = dedup_verdicts(survivors, params.dedup_threshold, params.num_perm)
        for e in survivors:
            e.verdicts["dedup"] = verdicts[e.id]
        survivors = [e for e in survivors if e.verdicts["dedup"] != "removed"]
    unjudged = 0
    if judge is not None:
        for e, score in zip(survivors, judge_scores(survivors, judge, progress=progress), strict=True):
            if score is None:
                unjudged += 1
            else:
                e.verdicts["judge"] = "pass" if score >= params.judge_min_score else "removed"
    funnel = funnel_counts(examples)
    funnel["judge_unparseable"] = unjudged
    return funnel


def first_removal(example: Example) -> str | None:
    if example.status != "ok":
        return "teacher"
    return next((f for f in FILTERS if example.verdicts.get(f) == "removed"), None)


def funnel_counts(examples: list[Example]) -> dict[str, Any]:
    """Per (task, language) and in total: generated, removed by the teacher (failed) and by each filter, kept."""
    stages = ("teacher", *FILTERS)
    rows: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for e in examples:
        row = rows[(e.task, e.prompt_lang)]
        row["generated"] += 1
        removed = first_removal(e)
        row[removed or "kept"] += 1
    table = [{"task": t, "lang": lang, "generated": c["generated"], **{s: c[s] for s in stages}, "kept": c["kept"]}
             for (t, lang), c in sorted(rows.items())]
    total = {k: sum(r[k] for r in table) for k in ("generated", *stages, "kept")}
    return {"stages": list(stages), "rows": table, "total": total}


def fault_report(examples: list[Example]) -> dict[str, Any]:
    """For each injected fault: how many, and the share its target filter (and any filter) removed; for clean
    examples: the share each filter removed (false alarms)."""
    report: dict[str, Any] = {}
    answered = [e for e in examples if e.status == "ok"]
    for kind in FAULT_KINDS:
        hit = [e for e in answered if kind in e.faults]
        target = TARGET_FILTER[kind]
        reached = [e for e in hit if e.verdicts.get(target) != "n/a"]
        report[kind] = {"injected": len(hit), "filter": target,
                        "removed_by_filter": _share(sum(e.verdicts.get(target) == "removed" for e in hit), len(hit)),
                        "removed_by_filter_when_reached": _share(
                            sum(e.verdicts.get(target) == "removed" for e in reached), len(reached)),
                        "removed_by_any": _share(sum(first_removal(e) is not None for e in hit), len(hit))}
    clean = [e for e in answered if not e.faults]
    report["clean"] = {"examples": len(clean), **{
        f"removed_by_{f}": _share(sum(e.verdicts.get(f) == "removed" for e in clean), len(clean)) for f in FILTERS}}
    judged = [e for e in clean if e.verdicts.get("language") != "n/a"]
    report["clean"]["language_judged"] = len(judged)
    report["clean"]["removed_by_language_when_judged"] = _share(
        sum(e.verdicts["language"] == "removed" for e in judged), len(judged))
    return report


def _share(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None
