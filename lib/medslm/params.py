"""Parameter models of a run and of each step, and validation of whole profiles.

A profile is a YAML file with a ``run`` section (:class:`RunParams`) and a ``steps`` section mapping step names to
that step's parameters. Every field has a type, a default (the smoke value), constraints and a description, so
``load_profile`` can report *every* problem at once with file, step, field, bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# --------------------------------------------------------------------------------------------------------------
# YAML: PyYAML follows YAML 1.1 and reads `1e-4` (no dot) as a *string*. This loader reads it as a float.
# --------------------------------------------------------------------------------------------------------------


class _ProfileLoader(yaml.SafeLoader):
    """SafeLoader that resolves scientific notation such as ``1e-4`` and ``5E+3`` as floats."""


_ProfileLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with :class:`_ProfileLoader`; a syntax error names the file and line."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.load(f, Loader=_ProfileLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ProfileError([f"{where}: not valid YAML: {getattr(e, 'problem', e)}"]) from None


# --------------------------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------------------------


class StrictModel(BaseModel):
    """Base for parameter models: unknown fields are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_from_yaml_strings(cls, value: Any, info: Any) -> Any:
        """Accept numeric strings such as '1e-4' (a YAML 1.1 trap) for numeric fields; pydantic checks the rest."""
        field = cls.model_fields.get(info.field_name)
        if isinstance(value, str) and field is not None and field.annotation in (float, int, float | None):
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if field.annotation is int and number.is_integer() else number
        return value

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]):
        """Build the model from the variables of a notebook's parameters cell (``globals()``)."""
        return cls(**{name: namespace[name] for name in cls.model_fields if name in namespace})

    def params_hash(self) -> str:
        """A stable hash of the values, used to decide whether a step must run again."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


Device = Literal["auto", "cpu", "cuda"]
Language = Literal["de", "en"]


class RunParams(StrictModel):
    """What every step of a run shares."""

    name: str = Field("smoke", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name (letters, digits, _ . -).")
    output_dir: str = Field("outputs/smoke", min_length=1, description="Run directory, relative to the repository root or absolute.")
    seed: int = Field(0, ge=0, description="Seed for every random choice of the run.")
    language: Language = Field("de", description="Language of the target clinical model: de or en.")
    device: Device = Field("auto", description="auto (cuda if available, else cpu), cpu or cuda.")


# --------------------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------------------


class PrepareParams(StrictModel):
    """00_prepare: build the toy world and its tiny general model, or resolve a real corpus and base model."""

    source: Literal["toyworld", "hub", "local"] = Field(
        "toyworld", description="toyworld (embedded offline world), hub (a hub dataset, streamed) or local (JSONL/Parquet files)."
    )
    # --- toy world -----------------------------------------------------------------------------------------
    n_documents: int = Field(3000, gt=0, le=5_000_000, description="Web-corpus documents to generate (toy world).")
    de_fraction: float = Field(0.5, ge=0.0, le=1.0, description="Share of German documents in the toy corpus.")
    medical_fraction: float = Field(0.35, ge=0.0, le=1.0, description="Share of medical documents in the toy corpus.")
    ambiguous_fraction: float = Field(0.15, ge=0.0, le=1.0, description="Share of ambiguous (fitness, nutrition, wellness…) documents.")
    pretrain_documents: int = Field(2500, gt=0, description="General documents the tiny model is pretrained on.")
    chat_examples: int = Field(2500, ge=0, description="General chat examples mixed into pretraining.")
    vocab_size: int = Field(2048, ge=300, le=65536, description="BPE vocabulary size of the toy tokenizer.")
    hidden_size: int = Field(128, ge=16, description="Hidden size of the tiny Llama.")
    num_layers: int = Field(4, ge=1, description="Transformer layers of the tiny Llama.")
    num_heads: int = Field(4, ge=1, description="Attention heads of the tiny Llama.")
    intermediate_size: int = Field(384, ge=16, description="MLP width of the tiny Llama.")
    block_size: int = Field(128, ge=16, le=4096, description="Packed sequence length for pretraining.")
    pretrain_epochs: float = Field(3.0, gt=0, description="Passes over the pretraining data.")
    learning_rate: float = Field(3e-3, gt=0, lt=1, description="Peak learning rate of pretraining.")
    batch_size: int = Field(32, ge=1, description="Sequences per optimisation step.")
    # --- real corpora ------------------------------------------------------------------------------------------
    hub_dataset: str | None = Field(None, description="Hub dataset id for source=hub, e.g. HuggingFaceFW/fineweb-2.")
    hub_config: str | None = Field(None, description="Hub dataset config, e.g. deu_Latn.")
    hub_split: str = Field("train", description="Hub dataset split.")
    local_files: list[str] = Field(default_factory=list, description="JSONL or Parquet files for source=local.")
    text_field: str = Field("text", min_length=1, description="Field holding the document text.")
    max_documents: int = Field(100_000, gt=0, description="Documents taken from a hub or local corpus.")
    base_model: str | None = Field(
        None, description="Instruct model to adapt (hub id or local folder); the toy world uses its tiny model."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the base model.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub. Off unless you trust it.")

    @field_validator("local_files")
    @classmethod
    def _known_suffixes(cls, files: list[str]) -> list[str]:
        for f in files:
            if not f.endswith((".jsonl", ".json", ".parquet", ".jsonl.gz")):
                raise ValueError(f"{f!r} is not a .jsonl, .jsonl.gz, .json or .parquet file")
        return files


# Canonical order of the recipe. A step's notebook is notebooks/<dir>.ipynb; its outputs live in <run>/<dir>/.
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
}


def known_steps() -> list[str]:
    """Steps a profile may name, in recipe order."""
    return [s for s in STEP_ORDER if s in STEP_PARAMS]


# --------------------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------------------


class ProfileError(ValueError):
    """A profile with one or more problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid profile:\n" + "\n".join(f"  - {p}" for p in problems))


class Profile(BaseModel):
    """A validated profile: run parameters and the parameters of each step it names, in recipe order."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    run: RunParams
    steps: dict[str, StrictModel]

    def step_names(self) -> list[str]:
        return list(self.steps)

    def run_dir(self, root: Path | None = None) -> Path:
        """Absolute run directory; relative output_dir values are taken from ``root`` (default: the profile's repo)."""
        out = Path(self.run.output_dir)
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
        if err["type"] == "extra_forbidden":
            problems.append(
                f"{where}: unknown field {loc!r} (value {value!r}); allowed fields: {', '.join(model.model_fields)}"
            )
        elif err["type"] == "missing":
            problems.append(f"{where}: field {loc!r} is required")
        else:
            problems.append(
                f"{where}: field {loc!r} has bad value {value!r}: {_allowed(err, model.model_fields.get(name))}"
            )
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
    try:
        run = RunParams(**(data.get("run") or {}))
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
