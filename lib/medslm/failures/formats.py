"""Format failures of JSON tasks: answers that are not JSON, violate the task's JSON Schema, or lack fields.

The schema is checked with jsonschema (the validator class the schema's ``$schema`` names, Draft 2020-12 by
default); a missing field is a ``required`` violation anywhere in the object (path given, e.g. ``vitals.pulse``).
An answer wrapped in a Markdown code fence is parsed inside the fence when ``strip_code_fences`` is on.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?\s*```\s*$", re.S)


def parse_json_answer(answer: str, strip_code_fences: bool = True) -> tuple[Any, str | None]:
    """``(value, None)`` when ``answer`` is JSON, else ``(None, "what is wrong at line:column")``."""
    text = answer
    if strip_code_fences:
        match = _FENCE.match(answer)
        if match:
            text = match.group(1)
    if not text.strip():
        return None, "empty answer"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"{e.msg} at line {e.lineno} column {e.colno}"


@dataclass(frozen=True)
class FormatCheck:
    """Format of one JSON answer; ``error`` says why it is not JSON, ``schema_errors`` what the schema rejects."""

    valid_json: bool
    error: str | None = None
    schema_errors: list[str] = field(default_factory=list)
    missing_fields: list[str] = field(default_factory=list)

    @property
    def schema_violation(self) -> bool:
        return bool(self.schema_errors)


def _validator(schema: Mapping[str, Any]) -> Any:
    return _cached_validator(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _cached_validator(schema_json: str) -> Any:
    """The validator of a schema (checked once; tasks share a schema across thousands of answers)."""
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"the task's JSON schema is invalid: {e.message} (at {'/'.join(map(str, e.path)) or 'root'})") from None
    return cls(schema)


def check_format(answer: str, schema: Mapping[str, Any] | None = None, *, strip_code_fences: bool = True) -> FormatCheck:
    """Whether ``answer`` is JSON and, given a ``schema``, which schema errors and missing fields it has."""
    value, error = parse_json_answer(answer, strip_code_fences)
    if error is not None:
        return FormatCheck(False, error)
    if schema is None:
        return FormatCheck(True)
    errors, missing = [], []
    for err in sorted(_validator(schema).iter_errors(value), key=lambda e: list(map(str, e.path))):
        where = ".".join(map(str, err.absolute_path))
        errors.append(f"{where or '(root)'}: {err.message}")
        if err.validator == "required":
            present = err.instance if isinstance(err.instance, Mapping) else {}
            prefix = f"{where}." if where else ""
            missing += [f"{prefix}{name}" for name in err.validator_value if name not in present]
    return FormatCheck(True, None, errors, missing)
