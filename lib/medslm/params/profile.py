"""Profiles: the steps of the recipe, path and model resolution, and validation of whole profiles with every
problem reported at once (file, step, field, bad value, what is allowed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from medslm.params.base import (
    ProfileError,
    RunParams,
    StrictModel,
    looks_like_secret,
    mask_secret,
    read_yaml,
)
from medslm.params.data import AnnotateParams, ClassifyParams, PrepareParams
from medslm.params.evaluation import EvaluateParams, FailureAnalysisParams
from medslm.params.instructions import AlignParams, SynthesizeParams
from medslm.params.training import CptParams, MergeParams

STEP_ORDER: tuple[str, ...] = (
    "prepare",
    "annotate",
    "classify",
    "cpt",
    "merge",
    "synthesize",
    "align",
    "evaluate",
    "failure_analysis",
)
STEP_DIRS: dict[str, str] = {name: f"{i:02d}_{name}" for i, name in enumerate(STEP_ORDER)}

# Steps that are built, with their parameter models. Later steps register here when they land.
STEP_PARAMS: dict[str, type[StrictModel]] = {
    "prepare": PrepareParams,
    "annotate": AnnotateParams,
    "classify": ClassifyParams,
    "cpt": CptParams,
    "merge": MergeParams,
    "synthesize": SynthesizeParams,
    "align": AlignParams,
    "evaluate": EvaluateParams,
    "failure_analysis": FailureAnalysisParams,
}


def known_steps() -> list[str]:
    """Steps a profile may name, in recipe order."""
    return [s for s in STEP_ORDER if s in STEP_PARAMS]


# --------------------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------------------



class Profile(BaseModel):
    """A validated profile: run parameters and the parameters of each step it names, in recipe order."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    run: RunParams
    steps: dict[str, StrictModel]

    def step_names(self) -> list[str]:
        return list(self.steps)

    def restated_defaults(self) -> list[str]:
        """``section.field`` of every value the profile states although it equals the default (a profile states
        only what differs, as nanoGPT's config files override train.py)."""
        sections = {"run": self.run, **{f"steps.{name}": params for name, params in self.steps.items()}}
        out = []
        for where, params in sections.items():
            defaults = type(params)()
            out += [f"{where}.{name}" for name in sorted(params.model_fields_set)
                    if getattr(params, name) == getattr(defaults, name)]
        return out

    def describe(self) -> str:
        """Every resolved value of the run and of each step, one per line; ``*`` marks values the profile sets."""
        lines = [f"# {self.path}  (* = set by the profile, the rest are defaults from medslm.params)"]
        sections = {"run": self.run, **{f"steps.{name}": params for name, params in self.steps.items()}}
        for where, params in sections.items():
            lines.append(f"{where}:")
            values = params.model_dump(mode="json")
            for name in type(params).model_fields:
                mark = "*" if name in params.model_fields_set else " "
                lines.append(f"  {mark} {name}: {json.dumps(values[name], ensure_ascii=False)}")
        return "\n".join(lines)

    def run_dir(self, root: Path | None = None) -> Path:
        """Absolute run directory (output_dir is resolved against the profile's project folder when loaded)."""
        out = Path(self.run.output_dir).expanduser()
        if out.is_absolute():
            return out
        base = root if root is not None else repo_root_of(self.path)
        return (base / out).resolve()


def repo_root_of(path: Path) -> Path:
    """The repository a profile belongs to: the parent of its ``params/`` folder, else its own folder."""
    path = Path(path).resolve()
    parent = path.parent
    return parent.parent if parent.name == "params" else parent


def _allowed(err: dict[str, Any], field_info: Any) -> str:
    """What a field allows, from its constraints or the validation message."""
    parts = [err["msg"]]
    if field_info is not None and field_info.description:
        parts.append(field_info.description)
    return "; ".join(parts)


def _describe(errors: list[dict[str, Any]], where: str, model: type[BaseModel]) -> list[str]:
    problems = []
    for err in errors:
        loc = ".".join(str(x) for x in err["loc"]) or "(section)"
        name = str(err["loc"][0]) if err["loc"] else ""
        value = err.get("input")
        if isinstance(value, str) and ("key" in name.lower() or looks_like_secret(value)):
            value = mask_secret(value)  # never echo a pasted API key
        elif isinstance(value, dict | list) and looks_like_secret(json.dumps(value, default=str)):
            value = mask_secret(json.dumps(value, default=str))
        if err["type"] == "extra_forbidden":
            problems.append(
                f"{where}: unknown field {loc!r} (value {value!r}); allowed fields: {', '.join(model.model_fields)}"
            )
        elif err["type"] == "missing":
            problems.append(f"{where}: field {loc!r} is required")
        elif not err["loc"]:  # a rule across fields: its message names them
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        else:
            problems.append(
                f"{where}: field {loc!r} has bad value {value!r}: {_allowed(err, model.model_fields.get(name))}"
            )
    return problems


# Fields that hold paths (resolved against the profile's project folder, see repo_root_of) and model references
# (a hub id or a local folder, which must then exist). One table, so every step follows the same rule.
PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "run": ("output_dir",), "prepare": ("local_files",), "annotate": ("gold_file",), "classify": ("gold_file",),
    "cpt": ("qa_file",),
}
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "prepare": ("base_model",), "cpt": ("base",), "merge": ("instruct", "cpt_model", "experts"),
    "align": ("start_model",), "classify": ("encoder",), "synthesize": ("rejection_model",),
    "evaluate": ("comparators",),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


def _resolve_path(value: str, root: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path).resolve())


def _resolve_model(value: str, root: Path) -> str:
    """A local folder (absolute, ``~`` or relative to ``root``) as an absolute path; a hub id as it is."""
    path = Path(value).expanduser()
    local = path if path.is_absolute() else root / path
    if local.is_dir():
        return str(local.resolve())
    if value.startswith(("/", "./", "../", "~")) or not HUB_ID.match(value):
        raise ValueError(f"{value!r} is neither an existing folder (looked for {local}) nor a hub id (owner/name)")
    return value


def resolve_profile_paths(section: str, params: StrictModel, root: Path) -> list[str]:
    """Resolve ``params``' path and model fields in place against ``root``; returns the problems (missing input
    files, model references that are neither a folder nor a hub id)."""
    problems = []
    for name in PATH_FIELDS.get(section, ()):
        value = getattr(params, name)
        if value is None:
            continue
        resolved = [_resolve_path(v, root) for v in value] if isinstance(value, list) else _resolve_path(value, root)
        if name != "output_dir":
            missing = [v for v in (resolved if isinstance(resolved, list) else [resolved]) if not Path(v).exists()]
            problems += [f"field {name!r}: no such file {m} (relative paths start at {root})" for m in missing]
        object.__setattr__(params, name, resolved)  # keep model_fields_set: `show` marks what the profile set
    if section == "annotate" and getattr(params, "backend", None) not in ("transformers", "loglik"):
        return problems  # the openai backend names a served model, not a file or hub id
    for name in MODEL_FIELDS.get(section, ()) + (("model",) if section == "annotate" else ()):
        value = getattr(params, name)
        try:
            if isinstance(value, list):
                object.__setattr__(params, name, [_resolve_model(v, root) for v in value])
            elif isinstance(value, dict):
                object.__setattr__(params, name, {k: _resolve_model(v, root) for k, v in value.items()})
            elif value is not None:
                object.__setattr__(params, name, _resolve_model(value, root))
        except ValueError as e:
            problems.append(f"field {name!r}: {e}")
    return problems


def parse_profile(data: Any, path: str | Path = "<profile>") -> Profile:
    """Validate profile data (already read from YAML); raise :class:`ProfileError` listing every problem."""
    path = Path(path)
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ProfileError([f"{path}: a profile is a mapping with 'run' and 'steps' sections, got {type(data).__name__}"])
    for key in data:
        if key not in ("run", "steps"):
            problems.append(f"{path}: unknown section {key!r}; allowed sections: run, steps")

    run = None
    root = repo_root_of(path)
    try:
        run = RunParams(**(data.get("run") or {}))
        problems += [f"{path}: run: {p}" for p in resolve_profile_paths("run", run, root)]
    except ValidationError as e:
        problems += _describe(e.errors(), f"{path}: run", RunParams)
    except TypeError:
        problems.append(f"{path}: run: must be a mapping of fields, got {data.get('run')!r}")

    steps_data = data.get("steps") or {}
    steps: dict[str, StrictModel] = {}
    if not isinstance(steps_data, dict):
        problems.append(f"{path}: steps: must be a mapping of step name to parameters, got {steps_data!r}")
        steps_data = {}
    for name, values in steps_data.items():
        model = STEP_PARAMS.get(name)
        if model is None:
            planned = f" ({name!r} is planned but not built yet)" if name in STEP_ORDER else ""
            problems.append(f"{path}: unknown step {name!r}{planned}; known steps: {', '.join(known_steps())}")
            continue
        if values is not None and not isinstance(values, dict):
            problems.append(f"{path}: step {name}: must be a mapping of fields, got {values!r}")
            continue
        try:
            steps[name] = model(**(values or {}))
            problems += [f"{path}: step {name}: {p}" for p in resolve_profile_paths(name, steps[name], root)]
        except ValidationError as e:
            problems += _describe(e.errors(), f"{path}: step {name}", model)
    if not steps_data and not problems:
        problems.append(f"{path}: steps: names no step; known steps: {', '.join(known_steps())}")
    if problems:
        raise ProfileError(problems)
    ordered = {s: steps[s] for s in STEP_ORDER if s in steps}
    return Profile(path=path.resolve(), run=run, steps=ordered)


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file; every problem is reported at once in a :class:`ProfileError`."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError([f"{path}: no such profile file"])
    return parse_profile(read_yaml(path), path)


def step_params(profile: str | Path, step: str) -> StrictModel:
    """The validated parameters of one step of a profile (its defaults when the profile does not name it)."""
    prof = load_profile(profile)
    return prof.steps.get(step) or STEP_PARAMS[step]()
