"""Batched recording of received instances (``MEDSEG_BATCH_INDEX``) and its crash recovery.

With batching, a C-STORE succeeds once the file is fsynced and renamed into place; its row is
written with others in one transaction by the completion monitor on its next poll. A crash
before that loses only the in-memory queue, never the file: on start, ``reconcile`` records
every stored file that has no row, so nothing acknowledged is forgotten.
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
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, utcnow
from dicom_gateway.records import InstanceInfo, instance_info, record_instance, upsert_instances

logger = logging.getLogger(__name__)

#: Calling AE recorded for a file indexed after a crash when its file meta does not name one.
RECOVERED_AE = "RECOVERED"
_CHUNK = 500


class IndexQueue:
    """Instances stored on disk, waiting for their rows; drained by ``flush``."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
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
        items stay queued for the next call and the error is raised.
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
                upsert_instances(session, chunk, utcnow())
        except IntegrityError:
            # Another process inserted the same study/series meanwhile: one by one, with retry.
            for info in chunk:
                record_instance(self._session_factory, info)


def _stored_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*.dcm"):
        if not path.name.startswith("."):  # temp files of writes cut short
            yield path


def reconcile(session_factory: sessionmaker[Session], root: Path) -> int:
    """Record every instance file under ``root`` that has no row; returns how many.

    Reads headers only. A file that cannot be read is left alone and logged.
    """
    start = time.monotonic()
    with session_factory() as session:
        known = set(session.scalars(select(Instance.path)))
    missing = [p for p in _stored_files(root) if str(p) not in known]
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
        except (InvalidDicomError, OSError, AttributeError, ValueError) as exc:
            logger.error("cannot index %s: %s", path, type(exc).__name__)
            continue
        record_instance(session_factory, info)
        recorded += 1
    if recorded or missing:
        logger.warning(
            "reconciled %d stored instance(s) without a record in %.1f s",
            recorded,
            time.monotonic() - start,
        )
    return recorded
