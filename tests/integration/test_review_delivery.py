"""The delivery policy against a real DICOM peer (DCMTK storescp): a phantom-only result and
a flagged one are withheld (nothing reaches the peer, the withheld deliveries say why); once a
reviewer accepts the flagged one it is C-STOREd, SEG and SR."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryState, Job, JobState
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job
from tests.support.tools import need_tool
from worker.core.registry import Model, ModelSpec
from worker.core.settings import DicomDestination
from worker.delivery.deliver import execute_delivery
from worker.devtools.localstack import dcmtk_env, free_port, stop, wait_for_port
from worker.export.outputs import ModelOutput
from worker.ops.review import decide
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import LoadedSeries
from worker.runtime.jobs import DeliverTo, execute_job

pytestmark = pytest.mark.integration


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[tuple[DicomDestination, Path]]:
    tool = need_tool("storescp")
    port = free_port()
    received = tmp_path / "pacs"
    received.mkdir()
    process = subprocess.Popen(
        [tool, "-aet", "PACS", "-od", str(received), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process=process)  # type: ignore[arg-type]
    yield DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=port), received
    stop(process)  # type: ignore[arg-type]


class _Flagging:
    def __init__(self, inner: Model) -> None:
        self.inner = inner

    def predict(self, series: LoadedSeries) -> ModelOutput:
        output = self.inner.predict(series)
        output.review = ["test gate: lungs implausible (0.4 < 0.9)"]
        return output


class _FlaggingCache(ModelCache):
    def get(self, spec: ModelSpec) -> Model:
        return _Flagging(super().get(spec))


def _delivery(session_factory: sessionmaker[Session], job_id: int) -> Delivery:
    with session_factory() as session:
        (delivery,) = session.get_one(Job, job_id).results[-1].deliveries
        return delivery


def _received_uids(folder: Path) -> set[str]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.iterdir()
    }


def test_withheld_until_accepted_then_sent(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    pacs: tuple[DicomDestination, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    destination, received = pacs
    deliver_to = DeliverTo([destination], max_attempts=2)

    # A phantom-only result (as the fetal brain and chest X-ray models make): withheld.
    with monkeypatch.context() as patch:
        patch.setattr(ModelSpec, "validation_for", lambda self, sha: "phantom-only")
        phantom = queue_test_job(session_factory, chest_series(tmp_path / "a", 0, slices=6))
        state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", phantom, deliver_to)
    assert state is JobState.SUCCEEDED
    held = _delivery(session_factory, phantom)
    assert held.state is DeliveryState.WITHHELD and "phantom-only" in (held.error or "")
    assert execute_delivery(session_factory, [destination], held.id) is None  # not sendable

    # A flagged (needs_review) reference-only result: withheld until a reviewer accepts it.
    flagged = queue_test_job(session_factory, chest_series(tmp_path / "b", 1, slices=6))
    state = execute_job(session_factory, _FlaggingCache("cpu"), tmp_path / "r", flagged, deliver_to)
    assert state is JobState.NEEDS_REVIEW
    waiting = _delivery(session_factory, flagged)
    assert waiting.state is DeliveryState.WITHHELD and "needs review" in (waiting.error or "")
    assert execute_delivery(session_factory, [destination], waiting.id) is None
    assert list(received.iterdir()) == [], "nothing may reach the PACS before a decision"

    done = decide(session_factory, flagged, "accepted", by="dr x", destinations=[destination])
    assert done.released == ["pacs"]
    assert execute_delivery(session_factory, [destination], waiting.id) is DeliveryState.SENT
    with session_factory() as session:
        result = session.get_one(Job, flagged).results[-1]
        sent = {str(o.sop_instance_uid) for o in result.outputs if o.sop_instance_uid}
    assert _received_uids(received) == sent and len(sent) == 2  # SEG and SR
    assert _delivery(session_factory, phantom).state is DeliveryState.WITHHELD
