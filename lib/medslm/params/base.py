"""Parameter basics: the YAML loader, secrets that are never echoed, the strict base model, run parameters."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

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


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A YAML mapping whose keys are unique: a repeated key would otherwise win silently."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (lines {seen[key]} and {key_node.start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_ProfileLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with :class:`_ProfileLoader`; a syntax error, a repeated key or bytes that are not UTF-8
    name the file and line."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.load(f, Loader=_ProfileLoader)  # noqa: S506 - SafeLoader subclass
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ProfileError([f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                            "save the profile as UTF-8"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ProfileError([f"{where}: not valid YAML: {getattr(e, 'problem', e)}"]) from None


# --------------------------------------------------------------------------------------------------------------
# Secrets: recognised, never echoed
# --------------------------------------------------------------------------------------------------------------

_SECRET = re.compile(
    r"(?:^|[\s=:\"'/?&])(?:sk-|sk_|hf_|ghp_|gho_|github_pat_|xox[abpr]-|AKIA|glpat-)[A-Za-z0-9_\-]{8,}"  # known key prefixes
    r"|Bearer\s+\S{8,}"                                                                      # an Authorization value
    r"|^(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])(?![0-9a-f]+$)[A-Za-z0-9_\-]{32,}$"  # a long opaque token
)


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` looks like an API key or token (hex commit hashes and hub ids do not)."""
    return bool(_SECRET.search(text.strip()))


def mask_secret(text: str) -> str:
    """A stand-in that says what was hidden without showing any of it."""
    return f"<{len(text)} characters, not shown: it may be a secret>"


def scrub_secrets(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with the given ``secrets`` and anything that looks like a key or ``Bearer …`` value masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"Bearer\s+\S+", "Bearer ***", text)
    return re.sub(r"(?:sk-|sk_|hf_|ghp_|gho_|github_pat_|xox[abpr]-|glpat-)[A-Za-z0-9_\-]{8,}", "***", text)


# --------------------------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------------------------


class StrictModel(BaseModel):
    """Base for parameter models: unknown fields are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_from_yaml_strings(cls, value: Any, info: Any) -> Any:
        """Accept numeric strings such as '1e-4' (a YAML 1.1 trap) for numeric fields; refuse true/false there (it
        would become 1/0) and any value that looks like a secret (pydantic checks the rest)."""
        field = cls.model_fields.get(info.field_name)
        if isinstance(value, bool) and field is not None and field.annotation in (float, int, float | None, int | None):
            raise ValueError(f"{value} is not a number")
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and looks_like_secret(text):
                raise ValueError(f"{mask_secret(text)} looks like a secret (an API key or token): never write one in "
                                 "a profile; put it in an environment variable and name the variable (api_key_env)")
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


def server_url(value: str | None, needed_by: str | None, field: str = "base_url") -> str | None:
    """An OpenAI-compatible server URL (http or https): required when ``needed_by`` names the choice that needs it."""
    if needed_by and not value:
        raise ValueError(f"{needed_by} needs {field}, the server URL up to /v1, e.g. http://127.0.0.1:8000/v1")
    if value is not None and not re.match(r"^https?://", value):
        raise ValueError(f"{field} {value!r} must start with http:// or https://")
    return value


class RunParams(StrictModel):
    """What every step of a run shares."""

    name: str = Field("smoke", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name (letters, digits, _ . -).")
    output_dir: str = Field("outputs/smoke", min_length=1, description="Run directory, relative to the repository root or absolute.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for every random choice of the run (0 … 2**32 - 1).")
    language: Language = Field("de", description="Language of the target clinical model: de or en.")
    device: Device = Field("auto", description="auto (cuda if available, else cpu), cpu or cuda.")
    cpu_kernels: Literal["avx2", "native"] = Field(
        "avx2", description="PyTorch/MKL/oneDNN CPU kernels in the notebooks medslm run starts: avx2 pins their AVX2 "
                            "paths, so CPUs with and without AVX-512 give the same figures; native lets them pick the widest.")




class ProfileError(ValueError):
    """A profile with one or more problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid profile:\n" + "\n".join(f"  - {p}" for p in problems))

