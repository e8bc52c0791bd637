"""Issue 18 item 3: a UID over 64 characters is refused for good (A900, with a reason naming
the attribute), nothing is written, and the association goes on serving good instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import config
from pynetdicom import AE
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway import statuses
from dicom_gateway.server import start_gateway
from dicom_gateway.validation import uid_problem
from tests.support.factories import minimal_image
from tests.support.gateway import RecordingPublisher, wait_for_instances
from worker.core.settings import Settings
from worker.devtools.localstack import free_port

CT = "1.2.840.10008.5.1.4.1.1.2"
LONG_UID = "1.2." + "6" * 62 + ".1"  # the UID (68 characters)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", True),
        ("1.2.03.4", True),  # a leading zero: not strict DICOM, but common; accepted
        (LONG_UID, False),
        ("1.2.840.abc", False),
        ("1.2.", False),
        ("", False),
    ],
)
def test_uid_problem(value: str, ok: bool) -> None:
    assert (uid_problem(value) is None) is ok


@pytest.fixture(params=[True, False], ids=["fast", "pynetdicom"])
def gateway(
    request: pytest.FixtureRequest, settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[Settings]:
    settings = settings.model_copy(update={"port": free_port(), "fast_receive": request.param})
    server, monitor = start_gateway(settings, publish=RecordingPublisher())
    yield settings
    server.shutdown()
    monitor.stop()


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID"])
def test_over_long_uid_is_refused_permanently_without_a_file(
    gateway: Settings,
    session_factory: sessionmaker[Session],
    keyword: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.IGNORE)
    bad = minimal_image(CT, "CT")
    setattr(bad, keyword, LONG_UID)
    good = minimal_image(CT, "CT")

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.ae_title)
    assert assoc.is_established
    refused = assoc.send_c_store(bad)
    stored = assoc.send_c_store(good)
    assoc.release()

    assert refused.Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS  # A900: do not retry
    assert keyword in str(refused.ErrorComment)
    assert str(len(LONG_UID)) in str(refused.ErrorComment)
    assert stored.Status == statuses.SUCCESS
    files = list(Path(gateway.incoming_dir).rglob("*.dcm"))
    assert len(files) == 1  # the good one only
    wait_for_instances(session_factory, 1)


def test_length_checks_never_read_a_deferred_value() -> None:
    """The lean receive path decodes with large values deferred and no file behind them
    (reading one raises): the checks must judge them from their raw lengths. Regression: a
    512x512 CT was refused as undecodable by every default gateway."""
    import io

    import numpy as np
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import write_dataset

    from dicom_gateway.validation import check_lengths, check_pixel_length

    ds = minimal_image(CT, "CT")
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = np.zeros((512, 512), dtype=np.uint16).tobytes()
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    decoded = read_dataset(io.BytesIO(data), True, True, defer_size=4096)
    check_lengths(decoded, len(data))
    check_pixel_length(decoded)
    with pytest.raises(Exception, match="length past the end"):
        check_lengths(read_dataset(io.BytesIO(data), True, True, defer_size=4096), len(data) - 2)
