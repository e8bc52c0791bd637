"""C-ECHO (Verification) as a liveness check of a DICOM node, the gateway's own included."""

from __future__ import annotations

import logging

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

logger = logging.getLogger(__name__)


def echo(host: str, port: int, called_ae: str, calling_ae: str, timeout: float = 10.0) -> int:
    """The C-ECHO status the node at ``host:port`` answers; raises ConnectionError when the
    association is not established (refused, rejected or timed out)."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"no association with {called_ae}@{host}:{port}")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    return int(status.Status) if "Status" in status else -1
