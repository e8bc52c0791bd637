"""A pynetdicom C-STORE sender, for where DCMTK's storescu is not installed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pynetdicom import AE, StoragePresentationContexts

logger = logging.getLogger(__name__)


def send_files(paths: Sequence[Path], host: str, port: int, called_ae: str) -> list[int]:
    """Send ``paths`` over one association; returns the status of each C-STORE."""
    ae = AE(ae_title="MEDSEG-SCU")
    ae.requested_contexts = StoragePresentationContexts[:127]
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"association to {called_ae}@{host}:{port} failed")
    statuses: list[int] = []
    try:
        for path in paths:
            status = assoc.send_c_store(pydicom.dcmread(path))
            statuses.append(int(status.Status) if "Status" in status else -1)
    finally:
        assoc.release()
    return statuses
