"""Files written so that nothing half-done is left behind, and JSON / JSON Lines read with file:line errors.

Atomic writes (a temporary file renamed into place), JSON and JSONL I/O (``.gz`` too; UTF-8, binary and truncated
gzip reported with file and line), sha256 of files, timestamps and the package versions a run records.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------------------------
# Atomic writes and JSON(L)
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (indented, UTF-8, keys in insertion order)."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a syntax error names the file and line."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSON Lines atomically; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


class JsonlError(ValueError):
    """A malformed JSON Lines record; the message names the file and line."""


def iter_jsonl_numbered(path: str | Path, required: Iterable[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, record)`` for each record of a JSON Lines file (``.gz`` too); blank lines skipped.

    A line that is not UTF-8, not a JSON object, or lacks one of the ``required`` fields, a binary file and a
    truncated or corrupt gzip stream raise :class:`JsonlError` naming ``file:line``. Callers that check more fields
    use the line number in their own errors.
    """
    path = Path(path)
    required = tuple(required)
    for lineno, raw in _numbered_lines(path):
        if b"\x00" in raw:
            raise JsonlError(f"{path}:{lineno}: contains NUL bytes: a binary file, not JSON Lines text")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonlError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                             "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8") from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise JsonlError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise JsonlError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in required if k not in rec]
        if missing:
            raise JsonlError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}; present: {', '.join(rec)}")
        yield lineno, rec


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes)`` of a plain or gzip file; a gzip stream that ends early or is not gzip names the
    line where reading stopped."""
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    with opener(path, "rb") as f:
        try:
            for lineno, raw in enumerate(f, start=1):  # noqa: B007 - lineno is reported after the loop
                yield lineno, raw
        except EOFError:
            raise JsonlError(f"{path}:{lineno + 1}: the gzip stream ends early (a truncated download or copy?) "
                             f"after {lineno} complete line(s)") from None
        except (gzip.BadGzipFile, zlib.error, OSError) as e:
            if path.suffix != ".gz":
                raise
            raise JsonlError(f"{path}:{lineno + 1}: not a readable gzip file ({e})") from None


def iter_jsonl(path: str | Path, required: Iterable[str] = ()) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON Lines file (see :func:`iter_jsonl_numbered` for the errors)."""
    for _, rec in iter_jsonl_numbered(path, required):
        yield rec


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """All records of a JSON Lines file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path, required))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


PACKAGES = ("medslm", "torch", "transformers", "tokenizers", "datasets", "peft", "trl", "accelerate", "bitsandbytes",
            "mergekit", "papermill", "scikit-learn", "pydantic")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (None when absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


