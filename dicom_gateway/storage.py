"""Where instances live on disk: sanitized UID paths, atomic writes, a free-space check."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from worker.core.paths import safe_component


class InsufficientSpaceError(OSError):
    """Free space on the storage disk is below the configured threshold."""


def instance_path(root: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    return (
        root
        / safe_component(study_uid)
        / safe_component(series_uid)
        / f"{safe_component(sop_uid)}.dcm"
    )


#: Where files that can never be recorded are moved, under the storage root (see ``set_aside``).
REJECTED_DIR = ".rejected"


def set_aside(root: Path, path: Path) -> Path | None:
    """Move ``path`` (under ``root``) to ``root/.rejected/`` keeping its relative path, so
    that it is neither recorded nor retried again but kept for an operator; returns where it
    went, or None when it could not be moved (it is gone, or the disk refused)."""
    try:
        target = root / REJECTED_DIR / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    except (OSError, ValueError):
        return None
    return target


def check_free_space(root: Path, min_free_bytes: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < min_free_bytes:
        raise InsufficientSpaceError(f"{free} bytes free below the {min_free_bytes} threshold")


class DurableDirs:
    """Directories under ``root`` whose entry in their parent this process has made durable.

    A new study or series directory is on disk for good only once its parent is fsynced; that
    is done the first time a write lands in it, and later writes fsync only the directory they
    rename into. Each process keeps its own record, so a directory made by another receiver
    process is settled again here (one extra fsync). Bounded to ``limit`` entries, oldest
    forgotten first: a forgotten directory costs one more fsync of its parent.
    """

    def __init__(self, root: Path, limit: int = 4096) -> None:
        self._root = root
        self._limit = limit
        self._known: OrderedDict[Path, None] = OrderedDict()
        self._lock = threading.Lock()

    def settle(self, folder: Path) -> None:
        """Fsync the parent of ``folder`` and of each directory above it, up to the root,
        that is not known to be durable yet."""
        while folder not in (self._root, folder.parent):
            with self._lock:
                if folder in self._known:
                    self._known.move_to_end(folder)
                    return
            fsync_dir(folder.parent)
            with self._lock:
                self._known[folder] = None
                if len(self._known) > self._limit:
                    self._known.popitem(last=False)
            folder = folder.parent


def write_atomic(
    path: Path, data: bytes | Sequence[bytes | memoryview], durable: DurableDirs | None
) -> None:
    """Write ``data`` (bytes, or chunks written one after another) to ``path`` so that a
    reader sees the old file or the whole new one.

    The bytes go to a temporary file in the same directory, which is renamed over ``path``.
    With ``durable`` the file is fsynced before the rename, its directory after it, and every
    directory above that ``durable`` hasn't settled yet (a fsynced file whose rename, or whose
    new series directory, was still in the file system's journal would come back after a
    power loss under its temporary name, or not at all); with None nothing is flushed. On
    any error the temporary file is removed and the error re-raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            for chunk in [data] if isinstance(data, bytes) else data:
                fh.write(chunk)
            fh.flush()
            if durable is not None:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable is not None:
        fsync_dir(path.parent)
        durable.settle(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make ``folder``'s entries (a rename, a new file or sub-directory) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (a few network ones) refuse fsync on a directory.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
