"""A publisher that records what the gateway publishes (or fails like a broker that is down),
and a wait for the rows of the batch index."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance
from tests.support.tools import wait_until
from worker.core.settings import Settings

# The series quiet period for tests that count jobs, not the suite's 0.5 s: on a loaded
# 2-core machine a half-second stall between two C-STOREs completed a series early, and the
# rest of it made a second job for the grown series (rightly, but not the count asserted).
COUNTED_QUIET_SECONDS = 2.0


def wait_for_instances(factory: sessionmaker[Session], count: int, timeout: float = 10.0) -> None:
    """Until ``count`` instance rows exist: with the batch index (the default) a C-STORE is
    answered before its row is written, at the monitor's next poll."""

    def recorded() -> bool:
        with factory() as session:
            return session.scalar(select(func.count()).select_from(Instance)) == count

    wait_until(recorded, timeout=timeout)


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.down = False

    def __call__(self, task: str, job_id: int, queue: str, model: str | None = None) -> str:
        if self.down:
            raise ConnectionError("broker down")
        assert task == "medseg.run_job"
        self.sent.append((job_id, queue))
        return f"task-{job_id}"


def echo_from(settings: Settings, source: str, calling_ae: str = "ECHOSCU") -> int | None:
    """C-ECHO the gateway from the local address ``source``; its status, None if refused."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = 5
    assoc = ae.associate(
        "127.0.0.1", settings.port, ae_title=settings.ae_title, bind_address=(source, 0)
    )
    if not assoc.is_established:
        return None
    status = int(assoc.send_c_echo().Status)
    assoc.release()
    return status
