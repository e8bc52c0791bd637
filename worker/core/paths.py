"""Path components from UIDs a sender controls: both roles build paths from them (the gateway
under incoming/, the worker under results/)."""

from __future__ import annotations

import hashlib
import re

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def safe_component(uid: str) -> str:
    """A path component for ``uid``: the UID itself when well formed, else a stable hash.

    A sender controls the UIDs; nothing it sends may climb out of the storage root.
    """
    uid = uid.strip().rstrip("\x00")
    if 0 < len(uid) <= 64 and _UID.match(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]
