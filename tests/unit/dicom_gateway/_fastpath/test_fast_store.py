"""The lean C-STORE path (dicom_gateway/_fastpath/) against pynetdicom's own.

Every behaviour is checked on both paths of a real gateway (MEDSEG_FAST_RECEIVE true and
false) over loopback associations, so the fast path answers and stores exactly what
pynetdicom's path does; the encoders are checked against pydicom's.
"""

from __future__ import annotations

import io
import itertools
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    build_context,
)
from pynetdicom.dsutils import encode_file_meta as pynetdicom_file_meta
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway import statuses
from dicom_gateway._fastpath.fast_store import (
    FastStore,
    MalformedPDUError,
    PartsReader,
    StoreEvent,
    _Context,
    encode_store_response,
    p_data_pdu,
    parse_command,
    split_pdvs,
)
from dicom_gateway._fastpath.reactor import (
    EventDrivenRequestHandler,
    FastAssociationSocket,
    request_handler,
)
from dicom_gateway.filemeta import PREAMBLE, encode_file_meta
from dicom_gateway.server import start_gateway
from tests.support.factories import chest_phantom, chest_series
from worker.core.settings import Settings
from worker.devtools.localstack import free_port
from worker.models.lung_ct.phantoms import write_chest_series

CT = "1.2.840.10008.5.1.4.1.1.2"


def _published(task: str, row_id: int, queue: str, model: str | None = None) -> str:
    return f"task-{row_id}"


@pytest.fixture(params=[True, False], ids=["fast", "pynetdicom"])
def gateway(
    request: pytest.FixtureRequest, settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[Settings]:
    # A small maximum PDU: the sender splits each data set over many P-DATA-TF PDUs.
    settings = settings.model_copy(
        update={"port": free_port(), "fast_receive": request.param, "max_pdu": 8192}
    )
    server, monitor = start_gateway(settings, publish=_published)
    yield settings
    server.shutdown()
    monitor.stop()


def _associate(settings: Settings, syntax: str = ExplicitVRLittleEndian) -> Any:
    ae = AE(ae_title="TESTSCU")
    ae.requested_contexts = [build_context(CTImageStorage, [syntax]), build_context(Verification)]
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc.is_established
    return assoc


def _stored(settings: Settings, ds: pydicom.Dataset) -> Path:
    (path,) = settings.incoming_dir.rglob(f"{ds.SOPInstanceUID}.dcm")
    return path


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_stored_file_is_the_data_set_as_sent(
    gateway: Settings, tmp_path: Path, syntax: str
) -> None:
    ds = pydicom.dcmread(chest_series(tmp_path, 0, slices=1)[0])
    assoc = _associate(gateway, syntax)
    assert assoc.send_c_store(ds).Status == statuses.SUCCESS
    assoc.release()
    stored = pydicom.dcmread(_stored(gateway, ds))
    assert stored.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.file_meta.SendingApplicationEntityTitle == "TESTSCU"
    assert (stored.pixel_array == ds.pixel_array).all()
    assert stored.PatientID == ds.PatientID


def test_echo_between_stores_on_one_association(gateway: Settings, tmp_path: Path) -> None:
    files = chest_series(tmp_path, 1, slices=3)
    assoc = _associate(gateway)
    answers = []
    for path in files:
        answers.append(int(assoc.send_c_store(pydicom.dcmread(path)).Status))
        answers.append(int(assoc.send_c_echo().Status))
    assoc.release()
    assert answers == [statuses.SUCCESS] * 6
    assert len(list(gateway.incoming_dir.rglob("*.dcm"))) == 3


def test_refusal_reaches_the_sender_with_its_comment(gateway: Settings, tmp_path: Path) -> None:
    ds = pydicom.dcmread(chest_series(tmp_path, 2, slices=1)[0])
    del ds.PixelData
    assoc = _associate(gateway)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert status.ErrorComment == "image without pixel data"


def test_handler_exception_answers_c211_and_the_association_goes_on(
    gateway: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = (pydicom.dcmread(p) for p in chest_series(tmp_path, 3, slices=2))

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("bug")

    assoc = _associate(gateway)
    with monkeypatch.context() as patch:
        patch.setattr("dicom_gateway.handlers.write_atomic", broken)
        assert assoc.send_c_store(first).Status == statuses.HANDLER_FAILED
    assert assoc.send_c_store(second).Status == statuses.SUCCESS
    assoc.release()


def test_deflated_transfer_syntax_is_stored_as_received(gateway: Settings, tmp_path: Path) -> None:
    ds = pydicom.dcmread(chest_series(tmp_path, 4, slices=1)[0])
    assoc = _associate(gateway, DeflatedExplicitVRLittleEndian)
    assert assoc.send_c_store(ds).Status == statuses.SUCCESS
    assoc.release()
    stored = pydicom.dcmread(_stored(gateway, ds))
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert (stored.pixel_array == ds.pixel_array).all()


def test_response_command_set_reads_back_with_pydicom() -> None:
    command = {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": "1.2.3.45", "MessageID": 7}
    encoded = encode_store_response(command, statuses.OUT_OF_RESOURCES, "disk full")
    rsp = read_dataset(BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert rsp.CommandGroupLength == len(encoded) - 12
    assert rsp.CommandField == 0x8001
    assert rsp.MessageIDBeingRespondedTo == 7
    assert rsp.CommandDataSetType == 0x0101
    assert rsp.Status == statuses.OUT_OF_RESOURCES
    assert rsp.ErrorComment == "disk full"
    assert rsp.AffectedSOPClassUID == CT
    assert rsp.AffectedSOPInstanceUID == "1.2.3.45"
    assert parse_command(encoded)["AffectedSOPInstanceUID"] == "1.2.3.45"


def test_pdv_items_split_and_bad_lengths_are_refused() -> None:
    pdu = p_data_pdu(3, b"\x01\x02\x03\x04")
    ((context_id, control, data),) = split_pdvs(memoryview(pdu)[6:])
    assert (context_id, control, bytes(data)) == (3, 0x03, b"\x01\x02\x03\x04")
    with pytest.raises(MalformedPDUError):
        split_pdvs(memoryview(pdu)[6:-1])  # item longer than what is left of the PDU
    with pytest.raises(MalformedPDUError):
        split_pdvs(memoryview(b"\x00\x00\x00\x01\x01"))  # item shorter than its header


@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths
def test_file_meta_bytes_match_pydicom(sop_uid: str) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(CT)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    meta.SendingApplicationEntityTitle = "MODALITY1"
    ours = encode_file_meta(CT, sop_uid, ExplicitVRLittleEndian, "MODALITY1 ")
    assert ours == pynetdicom_file_meta(meta)
    read = pydicom.dcmread(BytesIO(PREAMBLE + ours), force=True)
    assert read.file_meta.MediaStorageSOPInstanceUID == sop_uid


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_fast_path_answers_plain_syntaxes_and_leaves_deflate_to_pynetdicom(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    syntax: str,
) -> None:
    answered: list[str] = []
    original = FastStore._complete

    def spy(self: FastStore) -> None:
        answered.append(self._command["AffectedSOPInstanceUID"])
        original(self)

    monkeypatch.setattr(FastStore, "_complete", spy)
    settings = settings.model_copy(update={"port": free_port()})
    server, monitor = start_gateway(settings, publish=_published)
    try:
        files = [pydicom.dcmread(p) for p in chest_series(tmp_path, 5, slices=2)]
        assoc = _associate(settings, syntax)
        assert [int(assoc.send_c_store(ds).Status) for ds in files] == [statuses.SUCCESS] * 2
        assoc.release()
    finally:
        server.shutdown()
        monitor.stop()
    expected = (
        [] if syntax == DeflatedExplicitVRLittleEndian else [ds.SOPInstanceUID for ds in files]
    )
    assert answered == expected


def test_untested_pynetdicom_release_falls_back_to_its_own_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert request_handler(True) is EventDrivenRequestHandler
    assert request_handler(False) is None
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert request_handler(True) is None


def _reader(connection: socket.socket) -> FastAssociationSocket:
    reader = FastAssociationSocket.__new__(FastAssociationSocket)
    reader.socket = connection
    return reader


def test_pdu_reader_grows_with_the_bytes_not_with_the_announced_length() -> None:
    ours, peer = socket.socketpair()
    peer.sendall(b"x" * 1000)
    peer.close()
    tracemalloc.start()
    try:
        received = _reader(ours).recv(1 << 31)  # a header announcing 2 GiB, then 1000 bytes
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        ours.close()
    assert received == b"x" * 1000
    assert peak < 16 << 20


def test_pdu_reader_reads_bodies_larger_than_its_first_buffer() -> None:
    ours, peer = socket.socketpair()
    body = bytes(range(256)) * (40 << 10)  # 10 MiB
    sender = threading.Thread(target=peer.sendall, args=(body,))
    sender.start()
    received = _reader(ours).recv(len(body))
    sender.join()
    ours.close()
    peer.close()
    assert received == body


@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["read", "seek_set", "seek_cur", "seek_end"]), st.integers(-5, 80)
        ),
        max_size=20,
    ),
)
@hypothesis_settings(max_examples=300, deadline=None)
def test_parts_reader_reads_and_seeks_like_one_buffer(
    data: bytes, cuts: list[int], ops: list[tuple[str, int]]
) -> None:
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    parts = [memoryview(data)[a:b] for a, b in itertools.pairwise(bounds)]
    ours, reference = PartsReader(parts), BytesIO(data)
    for op, value in ops:
        if op == "read":
            assert ours.read(value) == reference.read(value)
        elif op == "seek_set" and value >= 0:
            assert ours.seek(value) == reference.seek(value)
        elif op == "seek_cur" and reference.tell() + value >= 0:
            assert ours.seek(value, io.SEEK_CUR) == reference.seek(value, io.SEEK_CUR)
        elif op == "seek_end" and len(data) + value >= 0:
            assert ours.seek(value, io.SEEK_END) == reference.seek(value, io.SEEK_END)
        assert ours.tell() == reference.tell()
    assert ours.read() == reference.read()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_store_event_decodes_through_the_fragments_without_reading_the_pixel_data(
    tmp_path: Path, syntax: str
) -> None:
    (path,) = write_chest_series(chest_phantom(0, slices=1, size=512), tmp_path)
    ds = pydicom.dcmread(path)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, syntax == ImplicitVRLittleEndian
    write_dataset(buffer, ds)
    encoded = buffer.getvalue()
    pixel_bytes = len(ds.PixelData)
    assert pixel_bytes > 100_000
    view = memoryview(bytearray(encoded))
    parts = [view[i : i + 8000] for i in range(0, len(encoded), 8000)]  # 8 kB PDUs
    command = {"AffectedSOPInstanceUID": ds.SOPInstanceUID, "AffectedSOPClassUID": CT}
    event = StoreEvent(None, _Context(1, CT, syntax), command, parts)

    tracemalloc.start()
    decoded = event.dataset
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < pixel_bytes / 4  # the pixel data was neither joined nor copied

    assert "PixelData" in decoded
    for element in ds:
        if element.keyword != "PixelData":
            assert decoded[element.tag].value == element.value, element.keyword
    assert event.encoded_parts() == parts
    assert event.encoded_dataset() == encoded
