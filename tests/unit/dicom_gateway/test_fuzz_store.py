"""Fuzzing the store handler and the loader with mutated DICOM data sets (hypothesis).

CI runs a few hundred examples per test; `HYPOTHESIS_PROFILE=soak` runs 10,000.
"""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dsutils import decode
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Instance
from db.session import make_engine, make_session_factory
from dicom_gateway import statuses
from dicom_gateway.handlers import StoreContext, handle_store
from tests.support.factories import chest_series
from worker.core.errors import InputError, SkippedError
from worker.pipeline.loading import load_series

# pydicom warns about each fuzzed value it reads, quoting it (kilobytes of binary in the
# summary of `make test`); those are expected here, so a real warning stays visible.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pydicom.*"),
]

settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("soak", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

KNOWN = {
    statuses.SUCCESS,
    statuses.SOP_CLASS_NOT_SUPPORTED,
    statuses.OUT_OF_RESOURCES,
    statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    statuses.CANNOT_DECODE,
}


@pytest.fixture(scope="module")
def seed_bytes(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, pydicom.Dataset]:
    path = chest_series(tmp_path_factory.mktemp("seed"), 0, slices=1)[0]
    ds = pydicom.dcmread(path)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue(), ds


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[StoreContext, sessionmaker[Session]]:
    root = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{root / 'fuzz.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    return StoreContext(
        storage_root=root / "incoming", session_factory=factory, min_free_bytes=0
    ), factory


class FakeEvent:
    """What handle_store reads from a pynetdicom EVT_C_STORE event, over raw bytes."""

    def __init__(self, payload: bytes, meta: Any) -> None:
        self._payload = payload
        self.file_meta = meta
        self.request = SimpleNamespace(
            AffectedSOPClassUID=meta.MediaStorageSOPClassUID,
            AffectedSOPInstanceUID=meta.MediaStorageSOPInstanceUID,
        )
        self.assoc = SimpleNamespace(
            requestor=SimpleNamespace(ae_title="FUZZER", address="127.0.0.1")
        )
        self.context = SimpleNamespace(transfer_syntax=meta.TransferSyntaxUID)

    @property
    def dataset(self) -> pydicom.Dataset:
        return decode(BytesIO(self._payload), False, True, False)

    def encoded_dataset(self, include_meta: bool = True) -> bytes:
        return b"\0" * 128 + b"DICM" + self._payload if include_meta else self._payload


def _mutate(data: bytes, draw: Any) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "splice"]))
    if not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        count = draw(st.integers(1, 8))
        out = bytearray(data)
        for i in range(at, min(len(out), at + count)):
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    end = draw(st.integers(at, len(data)))
    return data[:at] + data[end:]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_store_handler_answers_a_known_status_and_never_raises(
    data: st.DataObject,
    seed_bytes: tuple[bytes, pydicom.Dataset],
    store: tuple[StoreContext, sessionmaker[Session]],
) -> None:
    raw, ds = seed_bytes
    payload = _mutate(raw, data.draw)
    ctx, factory = store
    result = handle_store(FakeEvent(payload, ds.file_meta), ctx)
    assert int(result.Status) in KNOWN
    if int(result.Status) == statuses.SUCCESS:
        with factory() as session:
            row = session.scalars(
                select(Instance).where(Instance.sop_instance_uid == ds.SOPInstanceUID)
            ).one()
        assert Path(row.path).read_bytes().endswith(payload)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_loader_fails_only_with_input_errors(
    data: st.DataObject,
    seed_bytes: tuple[bytes, pydicom.Dataset],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    raw, ds = seed_bytes
    folder = tmp_path_factory.mktemp("load")
    path = folder / "x.dcm"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + buffer.getvalue() + _mutate(raw, data.draw))
    try:
        series = load_series([path])
    except (InputError, SkippedError):  # refused with a reason, or "not an image": clean
        return
    assert series.frames.ndim == 3


def test_an_unknown_vr_in_a_header_read_for_routing_is_an_input_error(
    seed_bytes: tuple[bytes, pydicom.Dataset], tmp_path: Path
) -> None:
    """Found by the fuzzer above: SOP Instance UID with VR 'TI' raised NotImplementedError
    from pydicom while the headers were read (before decoding), not InputError."""
    raw, ds = seed_bytes
    damaged = raw.replace(b"\x08\x00\x18\x00UI", b"\x08\x00\x18\x00TI", 1)
    assert damaged != raw
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + buffer.getvalue() + damaged)
    with pytest.raises(InputError, match="damaged DICOM data: NotImplementedError"):
        load_series([path])


@given(
    instance_number=st.integers(-(10**11) + 1, 10**12 - 1),  # every legal IS (12 characters)
    images=st.integers(-(10**11) + 1, 10**12 - 1),
)
def test_every_legal_integer_string_fits_its_database_column(
    instance_number: int, images: int
) -> None:
    """Issue 30 item 1 (the fuzzer hit it 7 times): an IS value past PostgreSQL's INTEGER was
    answered 0000, then its row refused. Whatever the value, what is recorded fits (or is
    empty); Images in Acquisition, a count, is at least 1."""
    from dicom_gateway.records import INT_MAX, INT_MIN, instance_info
    from tests.support.factories import minimal_image

    ds = minimal_image("1.2.840.10008.5.1.4.1.1.2", "CT")
    ds.InstanceNumber, ds.ImagesInAcquisition = str(instance_number), str(images)
    info = instance_info(
        ds, transfer_syntax_uid="1.2.840.10008.1.2.1", calling_ae="F", path="", size_bytes=0
    )
    if INT_MIN <= instance_number <= INT_MAX:
        assert info.instance_number == instance_number
    else:
        assert info.instance_number is None
    assert info.images_in_acquisition == (images if 1 <= images <= INT_MAX else None)
