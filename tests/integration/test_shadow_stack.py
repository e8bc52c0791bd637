"""A shadow version on the real stack: storescu → gateway → Redis → Celery worker on
PostgreSQL, results sent to a real DICOM peer (DCMTK storescp). A second version of the lung
CT U-Net (the shipped weights under another label) is installed in shadow with the CLI; a
chest CT phantom is sent; the live and the shadow results are both stored, linked, and only
the live one reaches the peer; ``medseg compare`` prints the report; ``medseg promote`` makes
the shadow version live, audited."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pydicom
import pytest
from sqlalchemy import select

from db.jobstate import TERMINAL
from db.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    OutputFile,
    Result,
    Series,
)
from db.shadow_models import ShadowResult
from tests.support.factories import chest_series
from tests.support.reviewed import copied_checkpoint
from tests.support.stack import dcmtk_pacs, medseg_cli, running_stack, stack_env, stack_logs
from tests.support.tools import dciodvfy_errors, need_tool
from worker.devtools.localstack import storescu

pytestmark = pytest.mark.integration

T = TypeVar("T")


def _wait(predicate: Callable[[], T | None], what: str, logs: Path, timeout: float = 240.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen in {timeout} s\n{stack_logs(logs)}")


def test_shadow_version_stored_never_delivered_compared_and_promoted(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    need_tool("storescu")
    with contextlib.ExitStack() as running:
        pacs = running.enter_context(dcmtk_pacs(tmp_path / "pacs"))
        env = {
            **stack_env(tmp_path, redis_url, postgres_url, [pacs.destination]),
            "MEDSEG_OPERATOR": "root-admin",
        }
        weights = copied_checkpoint(tmp_path / "weights")
        installed = medseg_cli(
            env, "shadow", "install", "lung-ct-unet", "--version", "1.1.0-shadow",
            "--weights", str(weights),
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        assert "installed in shadow" in installed.stdout

        factory = running.enter_context(running_stack(tmp_path, env)).session_factory
        paths = chest_series(tmp_path / "send", 5, slices=12)
        series_uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
        assert storescu(tmp_path / "send", int(env["MEDSEG_PORT"]), "MEDSEG").returncode == 0

        def finished() -> tuple[int, int] | None:
            with factory() as session:
                job = session.scalar(
                    select(Job).join(Series).where(Series.series_instance_uid == series_uid)
                )
                if job is None or job.state not in TERMINAL or not job.results:
                    return None
                shadow = session.scalar(
                    select(ShadowResult).where(ShadowResult.result_id == job.results[-1].id)
                )
                sent = session.scalar(
                    select(Delivery).where(
                        Delivery.result_id == job.results[-1].id,
                        Delivery.state == DeliveryState.SENT,
                    )
                )
                return (job.id, shadow.id) if shadow and sent else None

        job_id, shadow_id = _wait(finished, "the live result sent and its shadow stored", tmp_path)

        with factory() as session:
            job = session.get_one(Job, job_id)
            assert job.state is JobState.SUCCEEDED
            (live,) = job.results
            shadow = session.get_one(ShadowResult, shadow_id)
            assert shadow.status == "succeeded", shadow.error
            assert (live.model_version, shadow.model_version) == ("1.0.0", "1.1.0-shadow")
            live_uids = set(
                session.scalars(
                    select(OutputFile.sop_instance_uid).where(
                        OutputFile.result_id == live.id, OutputFile.sop_instance_uid.isnot(None)
                    )
                )
            )
            # This job's deliveries.
            delivered = select(Delivery.result_id).join(Result).where(Result.job_id == job_id)
            assert session.scalars(delivered).all() == [live.id]
        assert shadow.seg_path is not None
        assert dciodvfy_errors(Path(shadow.seg_path)) == []
        shadow_uid = str(pydicom.dcmread(shadow.seg_path, stop_before_pixels=True).SOPInstanceUID)
        time.sleep(1.0)  # anything else on its way to the peer would have arrived
        at_peer = pacs.sop_instance_uids()
        assert at_peer == live_uids  # the live SEG and SR, nothing of the shadow's
        assert shadow_uid not in at_peer

        compared = medseg_cli(
            env, "compare", "lung-ct-unet", "--live", "1.0.0", "--shadow", "1.1.0-shadow"
        )
        assert compared.returncode == 0, compared.stderr
        assert "live 1.0.0 vs shadow 1.1.0-shadow on 1 series" in compared.stdout
        assert "Dice live vs shadow: mean 1.000" in compared.stdout
        assert "left_lung_volume_ml: n=1 mean +0.000" in compared.stdout
        assert "flagged by the gate: live 0%, shadow 0%" in compared.stdout

        promoted = medseg_cli(env, "promote", "lung-ct-unet", "1.1.0-shadow")
        assert promoted.returncode == 0, promoted.stderr
        with factory() as session:
            events = session.scalars(
                select(AuditEvent.action).where(AuditEvent.actor == "root-admin")
            ).all()
        assert list(events) == ["shadow", "promote"]
