"""Batched recording of received instances (``MEDSEG_BATCH_INDEX``) and its crash recovery.

With batching, a C-STORE succeeds once the file is fsynced and renamed into place; its row is
written with others in one transaction by the completion monitor on its next poll. A crash
before that loses only the in-memory queue, never the file: on start, ``reconcile`` records
every stored file that has no row, so nothing acknowledged is forgotten.

Every value is made to fit its column before the instance is answered
(``records.instance_info``). Should the database still refuse a row for its content, that is
one instance, not an outage: its bare row (UIDs and file only) is recorded instead and the
rest of the batch goes on; an acknowledged file is never set aside. Only an unreachable
database keeps rows queued. At start, a file whose UIDs are invalid (never acknowledged: the
C-STORE refuses them) is set aside, so that it cannot stop the gateway from starting.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, utcnow
from dicom_gateway.records import (
    UNAVAILABLE,
    InstanceInfo,
    instance_info,
    record_acknowledged,
    remove_displaced,
    upsert_instances,
)
from dicom_gateway.storage import REJECTED_DIR, set_aside
from dicom_gateway.validation import DatasetRefusedError, check_uids

logger = logging.getLogger(__name__)

#: Calling AE recorded for a file indexed after a crash when its file meta does not name one.
RECOVERED_AE = "RECOVERED"
_CHUNK = 500


class IndexQueue:
    """Instances stored on disk, waiting for their rows; drained by ``flush``."""

    def __init__(self, session_factory: sessionmaker[Session], root: Path | None = None) -> None:
        self._session_factory = session_factory
        self._root = root
        #: Rows recorded bare (the database refused their descriptive values).
        self.bare = 0
        #: Rows the database refused even bare: their files stay, logged, for the next start.
        self.unrecorded = 0
        self._queue: queue.SimpleQueue[InstanceInfo] = queue.SimpleQueue()
        self._retry: list[InstanceInfo] = []

    def submit(self, info: InstanceInfo) -> None:
        self._queue.put(info)

    def pending(self) -> int:
        return self._queue.qsize() + len(self._retry)

    def _take(self) -> list[InstanceInfo]:
        items, self._retry = self._retry, []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def flush(self) -> int:
        """Record everything queued, ``_CHUNK`` rows per transaction; returns the count.

        Called from one thread only (the completion monitor). When the database is down the
        items stay queued for the next call and the error is raised; a row refused for its
        content is dropped (``_reject``) and the others are recorded.
        """
        items = self._take()
        done = 0
        try:
            for start in range(0, len(items), _CHUNK):
                chunk = items[start : start + _CHUNK]
                self._record(chunk)
                done += len(chunk)
        except SQLAlchemyError:
            self._retry = items[done:]
            raise
        if done:
            logger.debug("indexed %d instances", done)
        return done

    def _record(self, chunk: list[InstanceInfo]) -> None:
        try:
            with self._session_factory.begin() as session:
                displaced = upsert_instances(session, chunk, utcnow())
        except UNAVAILABLE:
            raise
        except SQLAlchemyError:
            # Another process inserted the same study/series meanwhile (IntegrityError), or
            # one row is bad (DataError, ...): one by one, each with its own transaction.
            for info in chunk:
                self._record_one(info)
            return
        remove_displaced(displaced, self._root)

    def _record_one(self, info: InstanceInfo) -> None:
        try:
            if not record_acknowledged(self._session_factory, info, self._root):
                self.bare += 1
        except UNAVAILABLE:
            raise
        except SQLAlchemyError as exc:
            # Acknowledged: the file stays where it is (the next start tries again).
            self.unrecorded += 1
            logger.error(
                "instance %s of series %s cannot be recorded (%s); file kept at %s",
                info.sop_instance_uid,
                info.series_uid,
                type(exc).__name__,
                info.path,
            )


def _stored_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*.dcm"):
        # Temp files of writes cut short, and files set aside (``.rejected``), are not stored.
        if not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def _mtime(path: Path) -> int:
    """When ``path`` was written (ns); -1 when it is gone."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def reconcile(session_factory: sessionmaker[Session], root: Path) -> int:
    """Record every instance file under ``root`` that has no row; returns how many.

    Reads headers only. A file that cannot be read is left alone and logged; one whose UIDs
    are not valid (the C-STORE refuses those: never acknowledged) is set aside under
    ``root/.rejected`` (a poisoned file must not stop the gateway from starting, again and
    again). A row refused for its content is recorded bare (``records.record_acknowledged``).
    Of two copies of one instance (resent under another series) the newer is kept: a copy
    older than the one its row names is removed, a newer one is recorded (the row moves) and
    the older removed.
    """
    start = time.monotonic()
    with session_factory() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.path)).all()
    home: dict[str, str] = {sop: stored for sop, stored in rows}
    known = set(home.values())
    # Oldest first: of two copies of one instance without a row, the newest is recorded last.
    missing = sorted((p for p in _stored_files(root) if str(p) not in known), key=_mtime)
    recorded = 0
    for path in missing:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            meta = ds.file_meta
            info = instance_info(
                ds,
                transfer_syntax_uid=str(meta.TransferSyntaxUID),
                calling_ae=str(meta.get("SendingApplicationEntityTitle", "") or RECOVERED_AE),
                path=str(path),
                size_bytes=path.stat().st_size,
            )
            check_uids(ds)
        except DatasetRefusedError as exc:
            logger.error("cannot index %s: %s; set aside in %s", path, exc, REJECTED_DIR)
            set_aside(root, path)
            continue
        except (InvalidDicomError, OSError, AttributeError, ValueError) as exc:
            logger.error("cannot index %s: %s", path, type(exc).__name__)
            continue
        current = home.get(info.sop_instance_uid)
        if current is not None and _mtime(Path(current)) >= _mtime(path):
            # One instance, one home: its row names a copy as new or newer, elsewhere (it was
            # resent under another series). This one is stale; recording it would move the
            # instance back.
            logger.warning("removing %s: a stale copy of an instance recorded elsewhere", path)
            path.unlink(missing_ok=True)
            continue
        try:
            record_acknowledged(session_factory, info, root)
        except UNAVAILABLE:
            raise
        except SQLAlchemyError as exc:
            logger.error("cannot record %s: %s; left in place", path, type(exc).__name__)
            continue
        home[info.sop_instance_uid] = str(path)
        recorded += 1
    if recorded or missing:
        logger.warning(
            "reconciled %d stored instance(s) without a record in %.1f s",
            recorded,
            time.monotonic() - start,
        )
    return recorded
