"""File records: what a step wrote or read, verified cheaply (size + mtime; sha256 only when those changed).

A record is ``{path (relative to a root), bytes, mtime_ns, sha256}``; :func:`verify_files` lists what is missing,
changed or new since. The run manifest (:mod:`medslm.rundir`) and the runner's plan (:mod:`medslm.plan`) use them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medslm.fileio import sha256_file


def file_record(path: Path, root: Path) -> dict[str, Any]:
    """``{path (relative to root), bytes, mtime_ns, sha256}`` of a file."""
    stat = path.stat()
    return {"path": str(path.relative_to(root)), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256_file(path)}


def visible_files(folder: Path) -> list[Path]:
    """Files under ``folder``, sorted, without hidden files or files inside hidden folders (locks, temp files)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


@dataclass(frozen=True)
class FileChange:
    """A recorded file that is missing or differs on disk, or a file that appeared since."""

    path: str
    what: str  # missing | changed | new

    def __str__(self) -> str:
        return {"missing": f"{self.path} was deleted", "changed": f"{self.path} changed (sha256 differs)",
                "new": f"{self.path} appeared"}[self.what]


def verify_files(root: Path, records: Iterable[dict[str, Any]], folder: Path | None = None) -> list[FileChange]:
    """The recorded files (paths relative to ``root``) that are missing or whose bytes changed, and, with
    ``folder``, the visible files there that no record names. A file with its recorded size and mtime is taken as
    unchanged without reading it (fast on large models); otherwise its sha256 decides."""
    changes, seen = [], set()
    for rec in records:
        path = root / rec["path"]
        seen.add(path)
        if not path.is_file():
            changes.append(FileChange(rec["path"], "missing"))
            continue
        stat = path.stat()
        if stat.st_size != rec["bytes"]:
            changes.append(FileChange(rec["path"], "changed"))
        elif rec.get("mtime_ns") != stat.st_mtime_ns and sha256_file(path) != rec["sha256"]:
            changes.append(FileChange(rec["path"], "changed"))
    if folder is not None:
        changes += [FileChange(str(p.relative_to(root)), "new") for p in visible_files(folder) if p not in seen]
    return changes
