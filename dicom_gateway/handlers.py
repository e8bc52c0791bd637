"""Thin C-STORE / C-ECHO handlers: validate, write atomically, record, answer a status."""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydicom import Dataset
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway import metrics, statuses
from dicom_gateway.contexts import PROCESSED_SOP_CLASSES
from dicom_gateway.filemeta import PREAMBLE, encode_file_meta
from dicom_gateway.indexer import IndexQueue
from dicom_gateway.limits import message_handled
from dicom_gateway.records import UNAVAILABLE, instance_info, record_acknowledged
from dicom_gateway.storage import (
    DurableDirs,
    InsufficientSpaceError,
    check_free_space,
    instance_path,
    write_atomic,
)
from dicom_gateway.validation import (
    DatasetRefusedError,
    check_lengths,
    check_pixel_length,
    check_uids,
)

logger = logging.getLogger(__name__)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@dataclass(frozen=True)
class StoreContext:
    """Dependencies of the store handler, built by the server factory."""

    storage_root: Path
    session_factory: sessionmaker[Session]
    min_free_bytes: int
    #: fsync every instance before answering success (MEDSEG_SYNC_STORAGE).
    sync_storage: bool = True
    #: Batched recording (MEDSEG_BATCH_INDEX): rows are written by the completion monitor.
    index: IndexQueue | None = None
    #: The study/series directories already made durable (used when ``sync_storage``).
    durable_dirs: DurableDirs = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "durable_dirs", DurableDirs(self.storage_root))


def _calling_ae(event: Any) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _validate(ds: Dataset, request: Any) -> tuple[int, str] | None:
    """A (status, reason) for a dataset we must refuse, or None when it is acceptable."""
    missing = [kw for kw in _REQUIRED_UIDS if not str(ds.get(kw, "")).strip()]
    if missing:
        return statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"missing {', '.join(missing)}"
    try:
        check_uids(ds)
    except DatasetRefusedError as exc:
        return statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)
    if str(ds.SOPInstanceUID) != str(request.AffectedSOPInstanceUID):
        return statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOP Instance UID differs from request"
    if str(ds.SOPClassUID) != str(request.AffectedSOPClassUID):
        return statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from request"
    if str(ds.SOPClassUID) not in PROCESSED_SOP_CLASSES:
        return statuses.SOP_CLASS_NOT_SUPPORTED, "SOP Class not processed by medseg"
    if not any(kw in ds for kw in _PIXEL_KEYWORDS):
        return statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "image without pixel data"
    try:
        check_pixel_length(ds)
    except DatasetRefusedError as exc:
        return statuses.CANNOT_DECODE, str(exc)
    return None


def _file_chunks(event: Any, calling: str) -> list[bytes | memoryview]:
    """The data set as received, behind file meta naming the sending AE (so a file recorded
    after a crash still knows its sender). The lean receive path offers the data set as the
    received fragments (``encoded_parts``), written without joining them first."""
    request = event.request
    meta = encode_file_meta(
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),
        str(event.context.transfer_syntax),
        calling,
    )
    parts = getattr(event, "encoded_parts", None)
    data = parts() if parts is not None else [event.encoded_dataset(include_meta=False)]
    return [PREAMBLE, meta, *data]


def handle_store(event: Any, ctx: StoreContext) -> Dataset:
    """EVT_C_STORE: a status dataset for every outcome; never raises into pynetdicom."""
    start = time.perf_counter()
    message_handled(event.assoc)
    result = _store(event, ctx)
    metrics.INSTANCES.labels(status=f"0x{int(result.Status):04X}").inc()
    metrics.STORE_SECONDS.observe(time.perf_counter() - start)
    return result


def _store(event: Any, ctx: StoreContext) -> Dataset:
    calling = _calling_ae(event)
    try:
        check_free_space(ctx.storage_root, ctx.min_free_bytes)
    except InsufficientSpaceError as exc:
        logger.error("refusing instance from %s: storage low (%s)", calling, exc)
        return statuses.status(statuses.OUT_OF_RESOURCES, "receiver storage full")

    try:
        # Everything we read from the data set is read here, before anything is written:
        # pydicom decodes lazily, so a damaged element may only fail when it is accessed.
        ds = event.dataset
        chunks = _file_chunks(event, calling)
        try:
            check_lengths(ds, sum(map(len, chunks[2:])))  # before any element is read
            refusal = _validate(ds, event.request)
        except DatasetRefusedError as exc:
            refusal = statuses.CANNOT_DECODE, str(exc)
        info = None
        if refusal is None:
            info = instance_info(
                ds,
                transfer_syntax_uid=str(event.context.transfer_syntax),
                calling_ae=calling,
                calling_host=str(event.assoc.requestor.address),
                path="",
                size_bytes=0,
            )
    except Exception as exc:  # a malformed stream can raise anything from the decoder
        logger.warning("cannot decode dataset from %s: %s", calling, type(exc).__name__)
        return statuses.status(statuses.CANNOT_DECODE, "cannot decode dataset")
    if refusal is not None or info is None:
        code, reason = refusal or (statuses.CANNOT_DECODE, "cannot decode dataset")
        logger.warning("refusing instance from %s: %s (0x%04X)", calling, reason, code)
        return statuses.status(code, reason)

    path = instance_path(ctx.storage_root, info.study_uid, info.series_uid, info.sop_instance_uid)
    try:
        write_atomic(path, chunks, ctx.durable_dirs if ctx.sync_storage else None)
    except OSError as exc:
        reason = "disk full" if exc.errno == errno.ENOSPC else "cannot write instance"
        logger.error("cannot store instance from %s: %s", calling, exc)
        return statuses.status(statuses.OUT_OF_RESOURCES, reason)

    info = replace(info, path=str(path), size_bytes=sum(map(len, chunks)))
    if ctx.index is not None:
        # Durable on disk; the row follows in the next batch (or reconcile after a crash).
        ctx.index.submit(info)
        metrics.BYTES.inc(info.size_bytes)
        return statuses.status(statuses.SUCCESS)
    try:
        # A row refused for its content is recorded bare: never a refusal the sender would
        # retry forever (every value was made to fit its column in ``instance_info``).
        record_acknowledged(ctx.session_factory, info, ctx.storage_root)
    except UNAVAILABLE as exc:
        # The file is on disk; a resend overwrites it and records it. Ask the sender to retry.
        logger.error("database unavailable, instance kept at %s: %s", path, type(exc).__name__)
        return statuses.status(statuses.OUT_OF_RESOURCES, "database unavailable")
    except SQLAlchemyError as exc:
        logger.error("cannot record instance, kept at %s: %s", path, type(exc).__name__)
        return statuses.status(statuses.OUT_OF_RESOURCES, "cannot record instance")
    metrics.BYTES.inc(info.size_bytes)
    return statuses.status(statuses.SUCCESS)


def handle_echo(event: Any) -> int:
    message_handled(event.assoc)
    logger.info("C-ECHO from %s", _calling_ae(event))
    return statuses.SUCCESS


def log_association(event: Any) -> None:
    """Accepted associations at INFO, rejected ones (unknown calling AE, ...) at WARNING."""
    assoc = event.assoc
    rejected = event.event.name == "EVT_REJECTED"
    metrics.ASSOCIATIONS.labels(outcome="rejected" if rejected else "accepted").inc()
    level = logging.WARNING if rejected else logging.INFO
    logger.log(
        level,
        "%s: calling AE %s from %s",
        event.event.name,
        str(assoc.requestor.ae_title).strip(),
        assoc.requestor.address,
    )
