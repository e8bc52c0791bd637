"""The operators' view of a real stack: gateway, Celery worker (prefork, 2 processes) with
metrics, Redis, PostgreSQL, a DCMTK storescp as the PACS, the dashboard under uvicorn driven by
headless Debian Chromium (selenium), and Flower against our Celery app."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.jobstate import TERMINAL
from db.models import Delivery, DeliveryState, Job, JobState, Result, Series, Study
from db.session import make_engine, make_session_factory
from tests.support.dashboard_data import ACCESSION, PATIENT_ID, PATIENT_NAME, identify, unusable
from tests.support.factories import chest_series
from tests.support.tools import need_tool, scrape_metrics
from worker.dashboard.auth import hash_password
from worker.dashboard.palette import STRUCTURES
from worker.devtools.localstack import (
    dcmtk_env,
    free_port,
    start_medseg,
    stop,
    storescu,
    wait_for_port,
)

pytestmark = pytest.mark.integration

PASSWORD = "operator password 1"
LEFT_LUNG_BGR = next(s.bgr for s in STRUCTURES if s.name == "Left lung")


@dataclass
class OpStack:
    root: Path
    env: dict[str, str]
    session_factory: sessionmaker[Session]
    metrics_port: int
    dashboard_port: int
    jobs: dict[str, int]  # ct, us, bad -> job id


def _logs(root: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in root.glob("*.log")
    )


def _wait(root: Path, what: str, check: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} not done in {timeout} s\n{_logs(root)}")


def _jobs(factory: sessionmaker[Session], series_uids: dict[str, str]) -> dict[str, Job]:
    with factory() as session:
        rows = session.scalars(
            select(Job)
            .join(Series)
            .where(Series.series_instance_uid.in_(series_uids.values()))
            .options(selectinload(Job.series), selectinload(Job.results))
        ).all()
    by_uid = {j.series.series_instance_uid: j for j in rows}
    return {name: by_uid[uid] for name, uid in series_uids.items() if uid in by_uid}


@pytest.fixture(scope="module")
def opstack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str
) -> Iterator[OpStack]:
    need_tool("storescu")
    storescp = need_tool("storescp")
    root = tmp_path_factory.mktemp("opstack")
    port, pacs_port, metrics_port, dashboard_port = (free_port() for _ in range(4))
    (root / "pacs").mkdir()
    pacs_log = open(root / "pacs.log", "wb")  # noqa: SIM115
    pacs = subprocess.Popen(
        [storescp, "-aet", "PACS", "-od", str(root / "pacs"), str(pacs_port)],
        env=dcmtk_env(),
        stdout=pacs_log,
        stderr=subprocess.STDOUT,
    )
    destination = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}
    env = {
        "MEDSEG_DATA_DIR": str(root / "data"),
        "MEDSEG_DATABASE_URL": postgres_url,
        "MEDSEG_BROKER_URL": redis_url,
        "MEDSEG_BROKER_KEY_PREFIX": f"medseg-ops-{uuid.uuid4().hex[:8]}:",
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(port),
        "MEDSEG_SERIES_QUIET_SECONDS": "1.0",
        "MEDSEG_COMPLETION_POLL_SECONDS": "0.2",
        "MEDSEG_MIN_FREE_BYTES": "0",
        "MEDSEG_DEVICE": "cpu",
        "MEDSEG_DESTINATIONS": json.dumps([destination]),
        "MEDSEG_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD),
        "MEDSEG_DASHBOARD_USER": "operator",
        "MEDSEG_DASHBOARD_LIVE_SECONDS": "1",  # live pages poll each second, not each 5
    }
    worker_args = ["worker", "--concurrency", "2", "--metrics-port", str(metrics_port)]
    processes = [
        start_medseg(["gateway"], env, root / "gateway.log"),
        # Only the worker: its pool processes write their samples there.
        start_medseg(
            worker_args,
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics")},
            root / "worker.log",
        ),
        start_medseg(["dashboard", "--port", str(dashboard_port)], env, root / "dashboard.log"),
    ]
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    try:
        wait_for_port(port, process=processes[0])
        wait_for_port(metrics_port, process=processes[1])
        wait_for_port(dashboard_port, process=processes[2])
        wait_for_port(pacs_port, process=pacs)
        uids = _send_studies(root / "send", port)
        _wait(root, "jobs", lambda: _all_terminal(factory, uids))
        jobs = {name: job.id for name, job in _jobs(factory, uids).items()}
        _wait(root, "deliveries", lambda: _delivered(factory, [jobs["ct"], jobs["us"]]))
        yield OpStack(root, env, factory, metrics_port, dashboard_port, jobs)
    finally:
        for process in processes:
            stop(process)
        stop(pacs)
        pacs_log.close()
        engine.dispose()


def _send_studies(folder: Path, port: int) -> dict[str, str]:
    from worker.models.fetal_head.us_dicom import write_us_phantom

    ct = chest_series(folder / "ct", 4, slices=6)
    bad = chest_series(folder / "bad", 5, slices=4)
    unusable(bad)
    us = [write_us_phantom(folder / "us" / "cine.dcm", 500010, frames=3).path]
    for paths in (ct, bad, us):
        identify(paths)
    done = storescu(folder, port, "MEDSEG")
    assert done.returncode == 0, done.stderr
    return {
        name: str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
        for name, paths in (("ct", ct), ("bad", bad), ("us", us))
    }


def _all_terminal(factory: sessionmaker[Session], uids: dict[str, str]) -> bool:
    jobs = _jobs(factory, uids)
    return len(jobs) == len(uids) and all(j.state in TERMINAL for j in jobs.values())


def _delivered(factory: sessionmaker[Session], job_ids: list[int]) -> bool:
    with factory() as session:
        rows = session.scalars(
            select(Delivery).join(Result).where(Result.job_id.in_(job_ids))
        ).all()
    return len(rows) == len(job_ids) and all(d.state is not DeliveryState.PENDING for d in rows)


def test_worker_metrics_after_real_jobs(opstack: OpStack) -> None:
    with opstack.session_factory() as session:
        jobs = {name: session.get_one(Job, job_id) for name, job_id in opstack.jobs.items()}
        assert jobs["ct"].state is JobState.SUCCEEDED, jobs["ct"].error
        assert jobs["us"].state is JobState.SUCCEEDED, jobs["us"].error
        assert jobs["bad"].state is JobState.FAILED
        inference = {
            j.model_name: j.results[0].inference_seconds for j in jobs.values() if j.results
        }
        # This stack's own jobs: the PostgreSQL database is shared by the session's tests.
        ours = list(opstack.jobs.values())
        deliveries = session.scalars(
            select(Delivery).join(Result).where(Result.job_id.in_(ours))
        ).all()
        assert deliveries and {d.state for d in deliveries} == {DeliveryState.SENT}
    samples = scrape_metrics(opstack.metrics_port)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    for stage in ("complete_to_queued", "queued_to_started", "started_to_finished"):
        assert value("medseg_job_stage_seconds_count", stage=stage) == 3, stage
        assert value("medseg_job_stage_seconds_sum", stage=stage) > 0, stage
    assert value("medseg_job_stage_seconds_count", stage="finished_to_delivered") == 2
    assert value("medseg_job_stage_seconds_sum", stage="finished_to_delivered") > 0
    for model, seconds in inference.items():
        assert value("medseg_inference_seconds_count", model=model) == 1
        assert value("medseg_inference_seconds_sum", model=model) == pytest.approx(seconds)
        for stage in ("load", "infer", "export", "deliver"):  # per stage, by model
            assert value("medseg_pipeline_stage_seconds_count", model=model, stage=stage) == 1
    failed_model = jobs["bad"].model_name
    assert value("medseg_jobs_finished_total", model=failed_model, state="failed") == 1
    assert value("medseg_deliveries_finished_total", state="sent") == 2
    assert not any(name.startswith("medseg_gpu_memory") for name, _ in samples), "no CUDA here"
    pids = {p.name.split("_")[-1] for p in (opstack.root / "metrics").glob("*.db")}
    assert len(pids) >= 1


def _chrome(root: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = need_tool("chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={root / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=need_tool("chromedriver"), log_output=str(root / "cd.log"))
    return webdriver.Chrome(service=service, options=options)


def _screenshot(driver: Any, path: Path) -> np.ndarray:
    png: bytes = driver.get_screenshot_as_png()
    path.write_bytes(png)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the screenshot is a PNG"
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    assert image.shape[:2] == (height, width), "the screenshot covers the viewport"
    assert float(image.std()) > 10, "not blank"
    return image


def _green(image: np.ndarray) -> int:
    return int(np.all(np.abs(image.astype(int) - LEFT_LUNG_BGR) <= 40, axis=2).sum())


def test_dashboard_in_headless_chromium(opstack: OpStack, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    base = f"http://127.0.0.1:{opstack.dashboard_port}"
    driver = _chrome(tmp_path)
    wait = WebDriverWait(driver, 20)
    shots = opstack.root / "screenshots"
    shots.mkdir(exist_ok=True)
    try:
        driver.get(f"{base}/jobs")
        assert driver.current_url == f"{base}/login"
        driver.find_element(By.ID, "username").send_keys("operator")
        driver.find_element(By.ID, "password").send_keys("wrong")
        driver.find_element(By.ID, "login").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "login-error")))
        driver.find_element(By.ID, "username").send_keys("operator")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "login").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "by-state")))
        overview = _screenshot(driver, shots / "overview.png")
        assert overview.shape[1] == 1280

        driver.get(f"{base}/jobs")
        rows = driver.find_elements(By.CSS_SELECTOR, "#jobs tr[id^=job-row-]")
        assert {r.get_attribute("id") for r in rows} >= {
            f"job-row-{i}" for i in opstack.jobs.values()
        }
        _screenshot(driver, shots / "jobs.png")
        ct = opstack.jobs["ct"]
        driver.find_element(By.CSS_SELECTOR, f"#job-row-{ct} a.job-link").click()
        image = wait.until(
            expected_conditions.presence_of_element_located((By.ID, f"overlay-{ct}"))
        )
        wait.until(lambda d: d.execute_script("return arguments[0].complete", image))
        natural = driver.execute_script("return arguments[0].naturalWidth", image)
        assert natural == 512, "the overlay PNG loaded"
        assert "/studies/" in driver.current_url
        for identifier in ("DOE", "PID-777", "ACC9911", "1.2."):
            assert identifier not in driver.current_url
        driver.execute_script("arguments[0].scrollIntoView()", image)
        study = _screenshot(driver, shots / "study.png")
        assert _green(study) > 300, "the left lung contour is on screen"
        element = cv2.imdecode(np.frombuffer(image.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
        assert element.shape[1] >= 510 and _green(element) > 300

        bad = opstack.jobs["bad"]
        with opstack.session_factory() as session:
            before, reason = session.get_one(Job, bad).started_at, session.get_one(Job, bad).error
        assert before is not None and reason
        driver.get(f"{base}/failures")
        row = driver.find_element(By.ID, f"failure-{bad}")
        assert reason in row.text
        _screenshot(driver, shots / "failures.png")
        driver.find_element(By.ID, f"retry-{bad}").click()
        flash = wait.until(expected_conditions.presence_of_element_located((By.ID, "flash")))
        assert flash.text == f"job {bad} queued again"

        def ran_again() -> bool:
            with opstack.session_factory() as session:
                job = session.get_one(Job, bad)
                started = job.started_at
                if started is not None and started.tzinfo is None:
                    started = started.replace(tzinfo=UTC)
                return job.state is JobState.FAILED and started is not None and started > before

        _wait(opstack.root, "the retried job", ran_again, timeout=60)
        driver.get(f"{base}/jobs?state=failed")
        cell = driver.find_element(By.CSS_SELECTOR, f"#job-row-{bad} span.state")
        assert cell.text == "failed"
        _screenshot(driver, shots / "after-retry.png")
    finally:
        driver.quit()
    log = (opstack.root / "dashboard.log").read_text()
    assert "GET /studies/" in log and "POST /jobs/" in log, "access lines are logged"
    with opstack.session_factory() as session:
        uids = [s.study_instance_uid for s in session.scalars(select(Study))]
        uids += [s.series_instance_uid for s in session.scalars(select(Series))]
    for identifier in [PATIENT_NAME, PATIENT_ID, ACCESSION, PASSWORD, *uids]:
        assert identifier not in log, "no PHI (nor the password) in the dashboard's log"


def test_flower_monitors_our_workers(opstack: OpStack) -> None:
    port = free_port()
    env = {**opstack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    flower = start_medseg(["flower", "--port", str(port)], env, opstack.root / "flower.log")
    try:
        wait_for_port(port, timeout=60, process=flower)
        deadline = time.monotonic() + 60
        workers: dict[str, object] = {}
        while time.monotonic() < deadline and not workers:
            url = f"http://127.0.0.1:{port}/api/workers?refresh=1"
            with urllib.request.urlopen(url, timeout=20) as response:
                workers = json.load(response)
            time.sleep(0.5)
        assert any(name.startswith("medseg@") for name in workers), _logs(opstack.root)
    finally:
        stop(flower)


def _log_in(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "username").send_keys("operator")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 20).until(
        expected_conditions.presence_of_element_located((By.ID, "by-state"))
    )


def test_job_history_after_a_retry_in_headless_chromium(opstack: OpStack, tmp_path: Path) -> None:
    """Issue 21 item 6: after a retry from the job's page, the page shows every attempt with
    its own error, the new one marked current, and who retried it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from db.models import AuditEvent, JobAttempt

    base = f"http://127.0.0.1:{opstack.dashboard_port}"
    bad = opstack.jobs["bad"]

    def attempts() -> list[JobAttempt]:
        with opstack.session_factory() as session:
            return list(
                session.scalars(
                    select(JobAttempt).where(JobAttempt.job_id == bad).order_by(JobAttempt.number)
                )
            )

    _wait(opstack.root, "the bad job failed", lambda: _state_of(opstack, bad) is JobState.FAILED)
    before = attempts()
    assert before and all(a.outcome == "failed" and a.error for a in before)
    driver = _chrome(tmp_path)
    wait = WebDriverWait(driver, 20)
    shots = opstack.root / "screenshots"
    shots.mkdir(exist_ok=True)
    try:
        _log_in(driver, base)
        wait.until(expected_conditions.presence_of_element_located((By.ID, "by-state")))
        driver.get(f"{base}/jobs/{bad}")
        driver.find_element(By.ID, f"retry-{bad}").click()
        flash = wait.until(expected_conditions.presence_of_element_located((By.ID, "flash")))
        assert flash.text == f"job {bad} queued again"
        _wait(
            opstack.root,
            "the retried job's new attempt",
            lambda: len(attempts()) == len(before) + 1 and _state_of(opstack, bad) in TERMINAL,
            timeout=60,
        )
        driver.get(f"{base}/jobs/{bad}")
        table = wait.until(
            expected_conditions.presence_of_element_located((By.ID, f"attempts-{bad}"))
        )
        rows = table.find_elements(By.CSS_SELECTOR, f"tr[id^=attempt-{bad}-]")
        assert [r.get_attribute("id") for r in rows] == [
            f"attempt-{bad}-{n}" for n in range(1, len(before) + 2)
        ]
        assert before[0].error and before[0].error[:40] in rows[0].text
        assert "(current)" in rows[-1].text and "(current)" not in rows[0].text
        audit = driver.find_element(By.ID, f"audit-{bad}")
        assert "operator" in audit.text and "dashboard" in audit.text and "retry" in audit.text
        driver.execute_script("arguments[0].scrollIntoView()", table)
        _screenshot(driver, shots / "job-history.png")
    finally:
        driver.quit()
    with opstack.session_factory() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.job_id == bad)).all()
    assert any(e.actor == "operator" and e.action == "retry" for e in events)


def _state_of(opstack: OpStack, job_id: int) -> JobState:
    with opstack.session_factory() as session:
        return session.get_one(Job, job_id).state


def _loaded(driver: Any, image: Any, part: str) -> Callable[[Any], bool]:
    """The overlay <img> shows the PNG whose URL has ``part``, fully loaded."""
    return lambda _: bool(
        driver.execute_script(
            "const i = arguments[0]; return i.src.includes(arguments[1]) && i.complete"
            " && i.naturalWidth > 0",
            image,
            part,
        )
    )


def _pixels(image: Any) -> np.ndarray:
    shot = cv2.imdecode(np.frombuffer(image.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
    assert shot is not None
    return shot


def test_reader_scrolls_windows_and_reads_ga_in_chromium(opstack: OpStack, tmp_path: Path) -> None:
    """Issue 21 item 5 in a real browser: our script scrolls the CT to another slice (button
    and arrow key), switches the window preset, and the US result reads GA as weeks+days."""
    import re

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base = f"http://127.0.0.1:{opstack.dashboard_port}"
    shots = opstack.root / "screenshots"
    shots.mkdir(exist_ok=True)
    driver = _chrome(tmp_path)
    wait = WebDriverWait(driver, 20)
    ct, us = opstack.jobs["ct"], opstack.jobs["us"]
    try:
        _log_in(driver, base)
        driver.get(f"{base}/jobs/{ct}")
        image = driver.find_element(By.ID, f"overlay-{ct}")
        first = int(driver.find_element(By.ID, f"position-{ct}").get_attribute("value"))
        wait.until(_loaded(driver, image, f"slice={first}&"))
        driver.execute_script("arguments[0].scrollIntoView()", image)
        before = _pixels(image)
        legend = driver.find_element(By.ID, f"legend-{ct}")
        assert "Left lung" in legend.text and "Right lung" in legend.text
        assert "image left R, right L" in legend.text
        _screenshot(driver, shots / "reader-ct-first.png")

        driver.find_element(By.ID, f"next-{ct}").click()
        wait.until(_loaded(driver, image, f"slice={first + 1}&"))
        after = _pixels(image)
        assert before.shape == after.shape and not np.array_equal(before, after), "a new slice"
        shown = driver.find_element(By.ID, f"shown-{ct}")
        assert shown.text == f"slice {first + 1}/6"
        driver.find_element(By.CSS_SELECTOR, f"#viewer-{ct} figure").send_keys(Keys.ARROW_LEFT)
        wait.until(_loaded(driver, image, f"slice={first}&"))
        assert shown.text == f"slice {first}/6"

        lung_window = _pixels(image)
        Select(driver.find_element(By.ID, f"window-{ct}")).select_by_value("mediastinum")
        wait.until(_loaded(driver, image, "window=mediastinum"))
        soft = _pixels(image)
        assert not np.array_equal(lung_window, soft), "the mediastinum window looks different"
        assert float(soft.mean()) < float(lung_window.mean()), "air goes black, lungs darker"
        _screenshot(driver, shots / "reader-ct-mediastinum.png")

        driver.get(f"{base}/jobs/{us}")
        image = driver.find_element(By.ID, f"overlay-{us}")
        wait.until(_loaded(driver, image, "slice="))
        table = driver.find_element(By.ID, f"measurements-{us}")
        ga = next(r for r in table.text.splitlines() if r.startswith("Gestational age"))
        assert re.search(r"\b\d{1,2}w[0-6]d$", ga), ga
        assert "{frame}" not in table.text and re.search(
            r"Head circumference \d+\.\d mm", table.text
        )
        assert "orientation unknown" in driver.find_element(By.ID, f"legend-{us}").text
        _screenshot(driver, shots / "reader-us.png")
    finally:
        driver.quit()


MR_PATIENT, MR_ACCESSION = "PID-MR-4711-SECRET", "ACCMR4711"


def _send_unrouted_mr(folder: Path, port: int) -> str:
    """An MR knee image (no model accepts it) from its own patient; its series UID."""
    from pydicom.uid import MRImageStorage

    from tests.support.factories import minimal_image

    ds = minimal_image(MRImageStorage, "MR")
    ds.BodyPartExamined, ds.StudyDate = "KNEE", "20261130"
    ds.PatientID, ds.AccessionNumber = MR_PATIENT, MR_ACCESSION
    folder.mkdir(parents=True)
    ds.save_as(folder / "knee.dcm", enforce_file_format=True)
    done = storescu(folder, port, "MEDSEG", calling_ae="MR_ROOM")
    assert done.returncode == 0, done.stderr
    return str(ds.SeriesInstanceUID)


def test_study_browser_and_live_pages_in_headless_chromium(
    opstack: OpStack, tmp_path: Path
) -> None:
    """Search by accession and patient ID, an unrouted series with its reason, a row that
    changes state while the page is open (no reload), polls paused while the tab is hidden."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from worker.ops.operations import cancel

    mr_series = _send_unrouted_mr(tmp_path / "mr", int(opstack.env["MEDSEG_PORT"]))

    def unrouted() -> bool:
        with opstack.session_factory() as session:
            series = session.scalars(
                select(Series).where(Series.series_instance_uid == mr_series)
            ).one_or_none()
            return series is not None and series.status.value == "unrouted"

    _wait(opstack.root, "the MR series routed (to nothing)", unrouted, timeout=60)
    with opstack.session_factory() as session:
        study_of = {
            name: session.get_one(Job, job_id).series.study_id
            for name, job_id in opstack.jobs.items()
        }
    base = f"http://127.0.0.1:{opstack.dashboard_port}"
    driver = _chrome(tmp_path)
    # A live update or a page load may replace an element between finding and reading it.
    wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))

    def rows() -> set[int]:
        ids = driver.execute_script(
            "return Array.from(document.querySelectorAll('#studies tr[id^=study-row-]'))"
            ".map(r => r.id)"
        )
        return {int(str(i).rsplit("-", 1)[1]) for i in ids}

    def loaded() -> None:
        """A click's navigation may commit its URL before the page is parsed."""
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

    def submit(button: str) -> None:
        """Click a search form button and wait for the page it leads to.

        Marked and clicked in the page itself: a WebDriver click on a node found a moment
        earlier can meet chromedriver's "Node with given id does not belong to the document"
        when the document is still settling (CI, 2026-12-05); the marker is gone only once
        the next document has replaced this one."""
        wait.until(
            lambda d: d.execute_script(
                "var b = document.getElementById(arguments[0]);"
                "if (!b || document.readyState !== 'complete') return false;"
                "window.medsegBeforeSubmit = true; b.click(); return true;",
                button,
            )
        )
        WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script(
                "return window.medsegBeforeSubmit === undefined"
                " && document.readyState === 'complete'"
            )
        )

    def search(field: str, value: str) -> None:
        submit("search-clear")
        driver.find_element(By.ID, field).send_keys(value)
        submit("search")
        assert driver.find_element(By.ID, field).get_attribute("value") == value

    try:
        _log_in(driver, base)
        driver.find_element(By.LINK_TEXT, "Studies").click()
        wait.until(lambda d: d.current_url == f"{base}/studies")
        loaded()
        assert rows() >= set(study_of.values())
        _screenshot(driver, tmp_path / "studies.png")

        search("search-accession", ACCESSION)
        assert rows() == set(study_of.values()), "the three studies of the stack's accession"
        search("search-patient-id", MR_PATIENT)
        assert len(rows()) == 1
        (mr_study,) = rows()
        assert mr_study not in study_of.values()
        for identifier in (MR_PATIENT, MR_ACCESSION, ACCESSION, PATIENT_ID, mr_series):
            assert identifier not in driver.current_url
        reason = driver.find_element(By.CSS_SELECTOR, "#studies tr.not-processed")
        assert "no model accepts modality MR, body part KNEE" in reason.text
        assert MR_PATIENT in driver.find_element(By.ID, f"study-row-{mr_study}").text
        _screenshot(driver, tmp_path / "studies-unrouted.png")
        reason.find_element(By.TAG_NAME, "a").click()
        wait.until(lambda d: f"/studies/{mr_study}#series-" in d.current_url)
        loaded()
        shown = driver.find_element(By.CSS_SELECTOR, ".not-processed").text
        assert shown.startswith("not processed: no model accepts modality MR, body part KNEE")

        # Live: the failed job of the "bad" study is cancelled behind the page's back.
        driver.get(f"{base}/studies")
        search("search-accession", ACCESSION)
        bad_row = f"study-row-{study_of['bad']}"
        assert "cancelled" not in driver.find_element(By.ID, bad_row).text
        driver.execute_script("window.notReloaded = true")
        typing = driver.find_element(By.ID, "search-patient-id")
        typing.send_keys("half-typed")
        cancel(opstack.session_factory, opstack.jobs["bad"])
        wait.until(lambda d: "cancelled" in d.find_element(By.ID, bad_row).text)
        assert driver.execute_script("return window.notReloaded") is True, "no reload"
        assert typing.get_attribute("value") == "half-typed", "the form is left alone"
        assert "live · updated" in driver.find_element(By.ID, "live-status").text
        _screenshot(driver, tmp_path / "studies-live.png")

        # Hidden tab: no polls; shown again: one at once.
        driver.execute_script(
            "Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
            "document.dispatchEvent(new Event('visibilitychange'));"
        )
        before = driver.find_element(By.TAG_NAME, "body").get_attribute("data-live-at")
        time.sleep(2.5)  # more than two periods of 1 s (MEDSEG_DASHBOARD_LIVE_SECONDS)
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-live-at") == before
        driver.execute_script(
            "Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
            "document.dispatchEvent(new Event('visibilitychange'));"
        )
        WebDriverWait(driver, 3).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live-at") != before
        )

        # The overview and the jobs list update too.
        driver.get(f"{base}/jobs")
        driver.execute_script("window.notReloaded = true")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live-at"))
        assert driver.execute_script("return window.notReloaded") is True
        _screenshot(driver, tmp_path / "jobs-live.png")
    finally:
        driver.quit()
    log = (opstack.root / "dashboard.log").read_text()
    assert "POST /studies" in log and "GET /studies" in log
    for identifier in (MR_PATIENT, MR_ACCESSION, ACCESSION, PATIENT_ID, mr_series):
        assert identifier not in log, "no PHI in the dashboard's log"


def _dated(paths: list[Path], **tags: str) -> None:
    """Our stack's patient (another accession), with ``tags`` set (dates, LMP)."""
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT_NAME, PATIENT_ID, "ACC31"
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def _send_charted_studies(folder: Path, port: int) -> dict[str, str]:
    """A fetal head US and a fetal brain MR stack with a Last Menstrual Date, and an older chest
    CT of the same patient as the stack's CT: series UIDs by name."""
    from datetime import date, timedelta

    from worker.models.fetal_brain.mr_dicom import write_mr_stack
    from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
    from worker.models.fetal_head.us_dicom import write_us_phantom

    today = date.today()
    us = [write_us_phantom(folder / "us" / "head.dcm", 500031).path]
    mr = write_mr_stack(make_fetal_brain_stack(3, plane="TRA"), folder / "mr")
    ct = chest_series(folder / "ct", 31, slices=6)
    # 20w3d on the day: the phantom brain (about 80 mL) sits near the reference's week 20.
    _dated(
        mr,
        StudyDate=today.strftime("%Y%m%d"),
        LastMenstrualDate=(today - timedelta(days=143)).strftime("%Y%m%d"),
    )
    _dated(us, LastMenstrualDate=(today - timedelta(days=24 * 7)).strftime("%Y%m%d"))
    _dated(ct, StudyDate="20250101")
    done = storescu(folder, port, "MEDSEG")
    assert done.returncode == 0, done.stderr
    return {
        name: str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
        for name, paths in (("us", us), ("mr", mr), ("ct", ct))
    }


def test_study_page_charts_in_headless_chromium(opstack: OpStack, tmp_path: Path) -> None:
    """Issue 31 in a real browser on the real stack: the GA with its Hadlock ±2 SD, the HC on
    its growth chart, the fetal brain volume on its reference chart, a patient's lung volumes
    over two studies (table, chart, PDF), and the live header's clock in UTC."""
    import re

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    uids = _send_charted_studies(tmp_path / "send", int(opstack.env["MEDSEG_PORT"]))
    _wait(opstack.root, "charted jobs", lambda: _all_terminal(opstack.session_factory, uids))
    jobs = _jobs(opstack.session_factory, uids)
    for name, job in jobs.items():
        assert job.state in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW), (name, job.error)
    study = {name: job.series.study_id for name, job in jobs.items()}
    base = f"http://127.0.0.1:{opstack.dashboard_port}"
    driver = _chrome(tmp_path)
    wait = WebDriverWait(driver, 30)

    def chart(element_id: str) -> np.ndarray:
        """The chart <img> inside ``element_id``, loaded, as pixels."""
        image = driver.find_element(By.CSS_SELECTOR, f"#{element_id} img")
        driver.execute_script("arguments[0].scrollIntoView()", image)
        wait.until(
            lambda _: driver.execute_script(
                "const i = arguments[0]; return i.complete && i.naturalWidth === 640", image
            )
        )
        pixels = _pixels(image)
        assert float(pixels.std()) > 10, f"{element_id}: not blank"
        return pixels

    def content_type(path: str) -> str:
        return str(
            driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(arguments[0])"
                ".then(r => done(r.status + ' ' + r.headers.get('content-type')))",
                path,
            )
        )

    try:
        _log_in(driver, base)
        us = jobs["us"].id
        driver.get(f"{base}/studies/{study['us']}")
        table = driver.find_element(By.ID, f"measurements-{us}").text
        assert re.search(r"Gestational age \(Hadlock 1984 HC\) \d{1,2}w[0-6]d", table), table
        assert re.search(r"Gestational age ± \(2 SD, Hadlock 1984 HC\) [123]\.\d+ wk", table)
        assert re.search(r"HC centile \(INTERGROWTH-21st\) (\d+(st|nd|rd|th)|<1st|>99th)", table)
        chart(f"growth-{us}")
        assert content_type(f"/jobs/{us}/growth.pdf") == "200 application/pdf"
        _screenshot(driver, tmp_path / "study-us-charts.png")

        mr = jobs["mr"].id
        driver.get(f"{base}/studies/{study['mr']}")
        table = driver.find_element(By.ID, f"measurements-{mr}").text
        assert "Gestational age by dates (LMP) 20w3d" in table
        brain = chart(f"brain-growth-{mr}")
        red = (brain[..., 2] > 180) & (brain[..., 1] < 60) & (brain[..., 0] < 60)
        assert red.sum() > 20, "the measured volume is on the chart"
        assert content_type(f"/jobs/{mr}/brain-growth.pdf") == "200 application/pdf"
        _screenshot(driver, tmp_path / "study-mr-brain-chart.png")

        driver.get(f"{base}/studies/{study['ct']}")
        lungs = driver.find_element(By.ID, "lung-volumes")
        rows = lungs.find_elements(By.CSS_SELECTOR, "tr[id^=lung-row-]")
        assert [r.get_attribute("id") for r in rows] == [
            f"lung-row-{jobs['ct'].id}",
            f"lung-row-{opstack.jobs['ct']}",
        ], "the older study first"
        assert "2025-01-01" in rows[0].text and "this study" in rows[0].text
        assert all(re.search(r"\d+\.\d mL", r.text) for r in rows)
        chart("lung-chart")
        assert content_type(f"/studies/{study['ct']}/lung-volumes.pdf") == "200 application/pdf"
        _screenshot(driver, tmp_path / "study-ct-lung-trend.png")

        driver.get(f"{base}/jobs")
        wait.until(lambda d: "live · updated" in d.find_element(By.ID, "live-status").text)
        clock = driver.find_element(By.ID, "live-status").text
        assert re.search(r"live · updated \d\d:\d\d:\d\d UTC$", clock), clock
        assert not driver.find_elements(By.CSS_SELECTOR, "td.state"), "badges, not cells"
        _screenshot(driver, tmp_path / "jobs-utc-clock.png")
    finally:
        driver.quit()
