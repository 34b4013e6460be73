"""lm-evaluation-harness itself as the reference of :func:`medslm.evaluate.score_mcq`: run ``lm_eval`` offline on
MCQ items written as a local JSON task, return its per-item choice log-likelihoods (tests and bench use it)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medslm.evaluate.mcq import MCQItem


def lm_eval_logliks(model_dir: str | Path, items: Sequence[MCQItem | dict[str, Any]], workdir: str | Path,
                    batch_size: int = 16, add_bos_token: bool | None = None) -> list[list[float]]:
    """Per-item choice log-likelihoods from ``lm_eval.simple_evaluate`` with the ``hf`` model on ``model_dir``
    (float32, CPU), the items as a ``dataset_path: json`` task (contexts and choices verbatim, target delimiter
    of the first item). Offline: sets ``HF_DATASETS_OFFLINE=1``."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    items = [it if isinstance(it, MCQItem) else MCQItem.from_record(it) for it in items]
    delimiters = {it.delimiter for it in items}
    if len(delimiters) != 1:
        raise ValueError(f"one lm-eval task has one target delimiter; the items use {sorted(delimiters)}")
    workdir = Path(workdir)
    (workdir / "tasks").mkdir(parents=True, exist_ok=True)
    data = workdir / "items.jsonl"
    data.write_text("".join(json.dumps({"context": it.context, "choices": it.choices, "gold": it.gold}) + "\n"
                            for it in items), encoding="utf-8")
    (workdir / "tasks" / "medslm_reference.yaml").write_text(
        "task: medslm_reference\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: context\ndoc_to_choice: choices\ndoc_to_target: gold\n"
        f"target_delimiter: {json.dumps(delimiters.pop())}\n"
        "metric_list:\n  - metric: acc\n", encoding="utf-8")
    model_args: dict[str, Any] = {"add_bos_token": add_bos_token} if add_bos_token is not None else {}
    lm = HFLM(pretrained=str(model_dir), backend="causal", device="cpu", batch_size=batch_size, dtype="float32",
              **model_args)
    out = simple_evaluate(model=lm, tasks=["medslm_reference"], log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(workdir / "tasks"), include_defaults=False))
    samples = sorted(out["samples"]["medslm_reference"], key=lambda s: s["doc_id"])
    return [[float(resp[0]) for resp in s["filtered_resps"]] for s in samples]
