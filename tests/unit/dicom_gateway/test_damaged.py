"""Issue 18 item 5: damaged data sets are refused at receive time (a C-class status naming
the damaged attribute), not acknowledged and left to fail in the worker."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pynetdicom.association
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway import statuses
from dicom_gateway.server import start_gateway
from tests.support.factories import minimal_image
from tests.support.gateway import RecordingPublisher
from worker.core.settings import Settings
from worker.devtools.localstack import free_port


@pytest.fixture(params=[True, False], ids=["fast", "pynetdicom"])
def gateway(
    request: pytest.FixtureRequest, settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[Settings]:
    settings = settings.model_copy(update={"port": free_port(), "fast_receive": request.param})
    server, monitor = start_gateway(settings, publish=RecordingPublisher())
    yield settings
    server.shutdown()
    monitor.stop()


def _image(size: int = 64) -> Dataset:
    ds = minimal_image(CTImageStorage, "CT")
    ds.SeriesDescription = "CHEST"
    ds.Rows = ds.Columns = size
    ds.PixelData = np.arange(size * size, dtype="<u2").tobytes()
    return ds


def _damaged(data: bytes, damage: str) -> bytes:
    if damage == "cut_at_60_percent":
        return data[: int(len(data) * 0.6)]
    if damage == "last_byte_missing":
        return data[:-1]
    if damage == "length_past_the_end":
        i = data.index(b"CHEST")
        return data[: i - 2] + (60000).to_bytes(2, "little") + data[i:]
    if damage == "pixel_length_past_the_end":
        i = data.index(b"\xe0\x7f\x10\x00OW\x00\x00") + 8
        length = int.from_bytes(data[i : i + 4], "little")
        return data[:i] + (length + 1000).to_bytes(4, "little") + data[i + 4 :]
    return data


def _send(
    settings: Settings, ds: Dataset, monkeypatch: pytest.MonkeyPatch, damage: str = ""
) -> Dataset:
    """C-STORE ``ds`` with its encoded bytes damaged on the way out (the SCU would re-encode
    a damaged file, so the damage is done after pynetdicom's encoder)."""
    encode = pynetdicom.association.encode
    monkeypatch.setattr(
        pynetdicom.association, "encode", lambda *a: _damaged(encode(*a) or b"", damage)
    )
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    return status


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("cut_at_60_percent", "PixelData (7FE0,0010)"),
        ("last_byte_missing", "PixelData (7FE0,0010)"),
        ("length_past_the_end", "SeriesDescription (0008,103E)"),
        ("pixel_length_past_the_end", "PixelData (7FE0,0010)"),
    ],
)
def test_a_damaged_data_set_is_refused_and_not_stored(
    gateway: Settings, monkeypatch: pytest.MonkeyPatch, damage: str, named: str
) -> None:
    status = _send(gateway, _image(), monkeypatch, damage)
    assert status.Status == statuses.CANNOT_DECODE
    assert named in str(status.ErrorComment)
    assert not list(gateway.incoming_dir.rglob("*.dcm"))


def test_pixel_data_shorter_than_the_image_geometry_is_refused(
    gateway: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _image()
    ds.Rows = 128  # 64 x 64 pixels sent for a 128 x 64 image
    status = _send(gateway, ds, monkeypatch)
    assert status.Status == statuses.CANNOT_DECODE
    assert str(status.ErrorComment) == "PixelData (7FE0,0010): 8192 bytes, image needs 16384"
    assert not list(gateway.incoming_dir.rglob("*.dcm"))


def test_an_intact_data_set_is_stored(gateway: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _send(gateway, _image(), monkeypatch).Status == statuses.SUCCESS
