"""The run folder's lock: one medslm run writes a run folder at a time.

An OS file lock (``filelock``) is held while a run works; a holder file beside it names the pid, host and start time,
so a second run is refused with who holds the folder, and a run that died without releasing it (the OS frees the lock
of a dead process) is taken over and reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from medslm.fileio import now_iso, write_json


class RunDirError(RuntimeError):
    """The run folder cannot be used (not a run, or in use)."""


class NotARunDir(RunDirError):
    """output_dir is a non-empty folder that is not a medslm run."""


class RunDirBusy(RunDirError):
    """Another process holds the run folder's lock."""


LOCK_FILES = (".medslm.lock", ".medslm-lock.json", ".manifest.lock")


def read_holder(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def describe_holder(path: Path) -> str:
    """``pid 123 on host h, started 2026-…`` from a lock's holder file (or why it is unknown)."""
    info = read_holder(path)
    if info is None:
        return "holder unknown: it has not written its details yet"
    return (f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}"
            + (f", profile {info['profile']}" if info.get("profile") else ""))


@contextlib.contextmanager
def hold_lock(folder: Path, **info: Any) -> Iterator[dict[str, Any] | None]:
    """Hold ``folder``'s run lock while the block runs; yields the holder info of a previous run that died without
    releasing it (taken over), else None. A second run raises :class:`RunDirBusy` naming the holder."""
    folder.mkdir(parents=True, exist_ok=True)
    holder_file = folder / LOCK_FILES[1]
    flock = FileLock(folder / LOCK_FILES[0], thread_local=False)
    try:
        flock.acquire(timeout=0)
    except Timeout:
        raise RunDirBusy(f"run folder {folder} is in use by another medslm run ({describe_holder(holder_file)});"
                         " wait for it to finish, or stop it first") from None
    try:
        stale = read_holder(holder_file)
        write_json(holder_file, {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(), **info})
        yield stale
    finally:
        holder_file.unlink(missing_ok=True)
        flock.release()
