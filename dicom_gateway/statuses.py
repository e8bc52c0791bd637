"""Named C-STORE status codes (PS3.4 B.2.3, PS3.7 C) so no bare hex appears in handlers."""

from __future__ import annotations

from pydicom import Dataset

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
CANNOT_DECODE = 0xC210  # a "cannot understand" code, as pynetdicom's storescp uses it
HANDLER_FAILED = 0xC211  # the code pynetdicom answers when a handler raises

_MAX_ERROR_COMMENT = 64  # Error Comment (0000,0902) is an LO


def status(code: int, comment: str | None = None) -> Dataset:
    """A status dataset; ``comment`` reaches the sender as Error Comment when not success."""
    ds = Dataset()
    ds.Status = code
    if comment and code != SUCCESS:
        ds.ErrorComment = comment.replace("\\", "/")[:_MAX_ERROR_COMMENT]
    return ds
