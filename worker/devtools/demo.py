"""``medseg demo``: a whole service on one machine, sample studies pushed over C-STORE."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import TERMINAL
from db.migrate import upgrade
from db.models import Job, Series, SeriesStatus
from db.session import make_engine, make_session_factory
from worker.devtools.localstack import (
    find_dcmtk_tool,
    free_port,
    start_medseg,
    start_redis,
    stop,
    storescu,
    wait_for_port,
)
from worker.export.report import print_results
from worker.models.fetal_brain.mr_dicom import write_mr_stack
from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.models.lung_ct.phantoms import make_chest_phantom, write_chest_series
from worker.models.lung_cxr.cr_dicom import write_cxr
from worker.models.lung_cxr.phantoms import make_chest_xray

logger = logging.getLogger(__name__)


def _write_samples(folder: Path, count: int) -> int:
    """Chest CT series, obstetric US studies (one cine), a fetal brain MR stack and a chest
    radiograph with an opacity; returns the number of series."""
    for i in range(count):
        phantom = make_chest_phantom(seed=100 + i, slices=36 + 6 * i)
        write_chest_series(phantom, folder / f"ct{i + 1}", patient_id=f"DEMO-CT-{i + 1:04d}")
    for i in range(count):
        write_us_phantom(
            folder / f"us{i + 1}" / "US0001.dcm",
            400000 + i,
            frames=1 + 3 * (i % 2),
            patient_id=f"DEMO-US-{i + 1:04d}",
        )
    stack = make_fetal_brain_stack(830000, plane="COR")
    write_mr_stack(stack, folder / "mr1", patient_id="DEMO-MR-0001")
    write_cxr(
        make_chest_xray(5, opacities=1), folder / "cr1" / "CR0001.dcm", patient_id="DEMO-CR-0001"
    )
    return 2 * count + 2


def _send(folder: Path, port: int, ae_title: str) -> None:
    if find_dcmtk_tool("storescu"):
        done = storescu(folder, port, ae_title, calling_ae="DEMO")
        if done.returncode != 0:
            raise RuntimeError(f"storescu failed ({done.returncode}): {done.stderr[-500:]}")
        return
    from worker.delivery.sender import send_files  # pragma: no cover - DCMTK missing

    send_files(sorted(folder.rglob("*.dcm")), "127.0.0.1", port, ae_title)


def _wait_for_jobs(session_factory: sessionmaker[Session], expected: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_factory() as session:
            states = session.scalars(select(Job.state)).all()
            unrouted = session.scalars(
                select(Series.id).where(Series.status == SeriesStatus.UNROUTED)
            ).all()
        if len(states) + len(unrouted) >= expected and all(s in TERMINAL for s in states):
            return True
        time.sleep(0.5)
    return False


def _research_hint() -> None:
    """What the demo left off: the research-only models (never validated on real patients)."""
    from worker.core.registry import all_specs, off_reason

    off = [spec.name for spec in all_specs() if off_reason(spec) is not None]
    if off:
        names = ", ".join(f'"{name}"' for name in off)
        print(
            f"\n{', '.join(off)}: never validated on real patient data, so off by default; "
            f"to run on the phantoms too (results NOT FOR CLINICAL USE):\n"
            f"  MEDSEG_RESEARCH_MODELS='[{names}]' make demo"
        )


def run_demo(workdir: Path, *, series: int = 2, timeout: float = 180.0) -> int:
    if workdir.exists():
        shutil.rmtree(workdir)
    data_dir = (workdir / "data").resolve()
    logs = workdir / "logs"
    port = free_port()
    env = {
        "MEDSEG_DATA_DIR": str(data_dir),
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(port),
        "MEDSEG_AE_TITLE": "MEDSEG",
        "MEDSEG_SERIES_QUIET_SECONDS": os.environ.get("MEDSEG_SERIES_QUIET_SECONDS", "2"),
        "MEDSEG_DATABASE_URL": os.environ.get(
            "MEDSEG_DATABASE_URL", f"sqlite:///{data_dir / 'medseg.db'}"
        ),
        # Off by default, research models stay off unless the caller turns them on.
        "MEDSEG_RESEARCH_MODELS": os.environ.get("MEDSEG_RESEARCH_MODELS", "[]"),
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if os.environ.get("MEDSEG_BROKER_URL"):
            env["MEDSEG_BROKER_URL"] = os.environ["MEDSEG_BROKER_URL"]
        else:
            url, redis = start_redis(workdir / "redis")
            processes.append(redis)
            env["MEDSEG_BROKER_URL"] = url
            print(f"started a private Redis broker at {url}")
        upgrade(env["MEDSEG_DATABASE_URL"])
        gateway = start_medseg(["gateway"], env, logs / "gateway.log")
        processes.append(gateway)
        processes.append(start_medseg(["worker", "--concurrency", "1"], env, logs / "worker.log"))
        wait_for_port(port, process=gateway)
        print(f"gateway MEDSEG listening on 127.0.0.1:{port}; logs in {logs}")

        samples = workdir / "samples"
        expected = _write_samples(samples, series)
        started = time.monotonic()
        _send(samples, port, "MEDSEG")
        print(
            f"sent {len(list(samples.rglob('*.dcm')))} instances in {expected} series over C-STORE"
        )

        engine = make_engine(env["MEDSEG_DATABASE_URL"])
        session_factory = make_session_factory(engine)
        finished = _wait_for_jobs(session_factory, expected, timeout)
        print(f"waited {time.monotonic() - started:.1f} s for results\n")
        print_results(session_factory, sys.stdout)
        engine.dispose()
        _research_hint()
        if not finished:
            print(f"demo timed out after {timeout} s; see {logs}", file=sys.stderr)
            return 1
        return 0
    finally:
        for process in reversed(processes):
            stop(process)
