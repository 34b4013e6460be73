"""Model cards (README.md with the hub's YAML header) that record where a model came from."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from medslm.models import ModelRef
from medslm.params import StrictModel
from medslm.rundir import package_versions


def model_card(title: str, summary: str, base: ModelRef, params: StrictModel, tags: list[str],
               lineage: dict[str, Any], results: dict[str, Any] | None = None) -> str:
    """A README.md: YAML header (library, tags, hub base model), a summary, the lineage table (base model and
    revision, ``lineage`` rows, params hash, date), optional results, the parameters and the package versions."""
    base_ref = base.ref if not base.local else f"local folder {base.ref}"
    rows = {"base model": base_ref, "base revision": base.revision or "-", **lineage,
            "params hash": params.params_hash(), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    lines = ["---", "library_name: transformers", f"tags: [{', '.join(['medslm', *tags])}]",
             *([f"base_model: {base.ref}"] if not base.local else []), "---", "", f"# {title}", "", summary, "",
             "## Lineage", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items())]
    if results:
        lines += ["", "## Results", "", "```json", json.dumps(results, indent=2, default=str), "```"]
    lines += ["", "## Parameters", "", "```json", json.dumps(params.model_dump(mode="json"), indent=2), "```", "",
              "## Software", ""]
    lines += [f"- {k} {v}" for k, v in package_versions().items() if v]
    return "\n".join(lines) + "\n"
