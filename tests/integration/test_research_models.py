"""The default over real DICOM: a fetal MR stack sent to a stack left at its defaults (no
``MEDSEG_RESEARCH_MODELS``) is stored, acknowledged with Success and kept, but the
phantom-only fetal brain model does not run on it; ``medseg status`` says why and how to turn
it on, and sending it to the model by hand is refused with the same reason."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from sqlalchemy import select

from db.models import Series, SeriesStatus
from tests.support.stack import medseg_cli, running_pacs_stack
from worker.devtools.localstack import storescu
from worker.models.fetal_brain.mr_dicom import write_mr_stack
from worker.models.fetal_brain.phantoms import make_fetal_brain_stack


def test_a_fetal_mr_is_kept_but_not_processed_while_its_model_is_off(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    folder = tmp_path / "mr"
    paths = write_mr_stack(make_fetal_brain_stack(3), folder, patient_id="RESEARCH-OFF")
    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
    mine = select(Series).where(Series.series_instance_uid == uid)  # the database is shared
    with running_pacs_stack(
        tmp_path / "stack", redis_url, postgres_url, {"MEDSEG_RESEARCH_MODELS": "[]"}
    ) as stack:
        done = storescu(folder, stack.port, "MEDSEG", calling_ae="MR_ROOM")
        assert done.returncode == 0, done.stderr  # every instance acknowledged with Success
        deadline = time.monotonic() + 60
        while True:
            with stack.session_factory() as session:
                series = session.scalars(mine).one_or_none()
                status = series.status if series is not None else None
            if status is SeriesStatus.UNROUTED:
                break
            assert time.monotonic() < deadline, f"series {status}\n{stack.logs()}"
            time.sleep(0.3)
        with stack.session_factory() as session:
            series = session.scalars(mine).one()
            assert series.jobs == []
            stored = series.instances
            assert len(stored) == len(paths)
            assert all((stack.data_dir / i.path).is_file() for i in stored)

        shown = medseg_cli(stack.env, "status")
        assert shown.returncode == 0, shown.stderr
        assert "fetal-brain-unet 1.0.0 is off" in shown.stdout
        assert "MEDSEG_RESEARCH_MODELS" in shown.stdout

        refused = medseg_cli(stack.env, "route", uid, "--model", "fetal-brain-unet")
        assert refused.returncode == 1
        assert "phantom-only" in refused.stderr and "MEDSEG_RESEARCH_MODELS" in refused.stderr
        with stack.session_factory() as session:
            assert session.scalars(mine).one().jobs == []
        assert list(stack.pacs.folder.iterdir()) == []  # nothing reached the PACS
