"""Where instances live on disk: sanitized UID paths, atomic writes, a free-space check."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class InsufficientSpaceError(OSError):
    """Free space on the storage disk is below the configured threshold."""


def safe_component(uid: str) -> str:
    """A path component for ``uid``: the UID itself when well formed, else a stable hash.

    A sender controls the UIDs; nothing it sends may climb out of the storage root.
    """
    uid = uid.strip().rstrip("\x00")
    if 0 < len(uid) <= 64 and _UID.match(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def instance_path(root: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    return (
        root
        / safe_component(study_uid)
        / safe_component(series_uid)
        / f"{safe_component(sop_uid)}.dcm"
    )


def check_free_space(root: Path, min_free_bytes: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < min_free_bytes:
        raise InsufficientSpaceError(f"{free} bytes free below the {min_free_bytes} threshold")


def write_atomic(path: Path, data: bytes | Sequence[bytes], sync: bool = True) -> None:
    """Write ``data`` (bytes, or chunks written one after another) to ``path`` so that a
    reader sees the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are fsynced (unless ``sync`` is
    false), then renamed over ``path``. On any error the temporary file is removed and the
    error re-raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            for chunk in [data] if isinstance(data, bytes) else data:
                fh.write(chunk)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
