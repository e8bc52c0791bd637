"""A real Prometheus (the `prometheus` binary) scraping a real gateway and a real worker with
deploy/alerts.yml loaded, studies sent by C-STORE: every panel of the Grafana dashboard
(deploy/grafana/dashboards/medseg.json) returns data, and the rules load. What compose would
run, without Docker (no daemon here): the same scrape jobs, on loopback ports."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.orm import Session, sessionmaker

from db.models import DeliveryState, Job, JobState, Series
from tests.support.factories import chest_series
from tests.support.history import with_result
from tests.support.jobs import add_job
from tests.support.tools import need_tool
from worker.core.settings import Settings
from worker.devtools.localstack import free_port, start_medseg, stop, storescu, wait_for_port

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]


def _wait(what: str, done: Any, timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs.glob("*.log")
            )
            raise AssertionError(f"{what} not after {timeout} s\n{tails}")
        time.sleep(0.5)


def _jobs_done(factory: sessionmaker[Session], count: int) -> bool:
    """``count`` jobs of the studies sent by C-STORE have a result."""
    with factory() as session:
        jobs = session.query(Job).join(Series).filter(Series.calling_ae == "STORESCU").all()
        done = (JobState.SUCCEEDED, JobState.NEEDS_REVIEW)
        return len(jobs) >= count and all(j.state in done for j in jobs)


def _failed(factory: sessionmaker[Session], job_id: int) -> bool:
    with factory() as session:
        return session.get_one(Job, job_id).state is JobState.FAILED


def test_every_dashboard_panel_returns_data_from_a_live_stack(
    settings: Settings, session_factory: sessionmaker[Session], redis_url: str, tmp_path: Path
) -> None:
    prometheus = need_tool("prometheus")
    need_tool("storescu")
    dicom, gateway_metrics, worker_metrics, web = (free_port() for _ in range(4))
    env = {
        "MEDSEG_DATA_DIR": str(settings.data_dir),
        "MEDSEG_BROKER_URL": redis_url,
        "MEDSEG_BROKER_KEY_PREFIX": f"medseg-monitoring-{uuid.uuid4().hex[:8]}:",
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(dicom),
        "MEDSEG_AE_TITLE": "MEDSEG",
        "MEDSEG_METRICS_PORT": str(gateway_metrics),
        "MEDSEG_SERIES_QUIET_SECONDS": "0.5",
        "MEDSEG_COMPLETION_POLL_SECONDS": "0.2",
        "MEDSEG_MIN_FREE_BYTES": "0",
        "MEDSEG_DEVICE": "cpu",
        "MEDSEG_WORKER_METRICS_PORT": str(worker_metrics),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom-multiproc"),
    }
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    config["scrape_configs"] = [  # compose's jobs, on loopback (no DNS names here)
        {
            "job_name": "medseg-gateway",
            "static_configs": [{"targets": [f"127.0.0.1:{gateway_metrics}"]}],
        },
        {
            "job_name": "medseg-worker",
            "static_configs": [{"targets": [f"127.0.0.1:{worker_metrics}"]}],
        },
    ]
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    # Rows for the gauges a short run would not reach: a flagged result, a failed delivery, a
    # quarantined job.
    with_result(session_factory, JobState.NEEDS_REVIEW, DeliveryState.WITHHELD, review="x")
    with_result(session_factory, JobState.SUCCEEDED, DeliveryState.FAILED)
    add_job(session_factory, "gpu", state=JobState.QUARANTINED, error="boom")

    logs = tmp_path / "logs"
    processes = [
        start_medseg(
            ["worker", "--queues", "cpu,gpu", "--concurrency", "1"], env, logs / "worker.log"
        ),
        start_medseg(["gateway"], env, logs / "gateway.log"),
    ]
    logs.mkdir(exist_ok=True)
    server = None
    try:
        wait_for_port(dicom, timeout=60, process=processes[1])
        wait_for_port(worker_metrics, timeout=60, process=processes[0])
        import subprocess

        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=(logs / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_for_port(web, timeout=60)

        def targets_up() -> bool:
            try:
                active = _api(web, "targets")["activeTargets"]
            except urllib.error.HTTPError as exc:
                if exc.code == 503:  # listening, storage not ready yet: Prometheus says 503
                    return False
                raise
            return len(active) == 2 and all(t["health"] == "up" for t in active)

        _wait("both targets up", targets_up, 60, logs)
        # Two rounds, scraped between: counters and histograms increase while watched.
        for round_, seed in enumerate((11, 12), start=1):
            failing = add_job(session_factory, "cpu")  # model "m" is not registered: it fails
            folder = tmp_path / f"study-{round_}"
            chest_series(folder, seed, slices=6)
            assert storescu(folder, dicom, "MEDSEG").returncode == 0
            _wait(
                f"round {round_} processed",
                lambda n=round_: _jobs_done(session_factory, n),
                300,
                logs,
            )
            _wait("the failing job", lambda j=failing: _failed(session_factory, j), 60, logs)
            time.sleep(3)  # a few scrapes
        rules = _api(web, "rules")["groups"]
        assert sum(len(g["rules"]) for g in rules) == len(
            yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
        )
        assert all(r["health"] == "ok" for g in rules for r in g["rules"])

        dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "medseg.json").read_text())
        empty: list[str] = []
        for panel in dashboard["panels"]:
            answered = []
            for target in panel["targets"]:
                result = _api(web, "query", query=target["expr"])["result"]
                values = [float(r["value"][1]) for r in result]
                if any(v == v for v in values):  # not NaN
                    answered.append(target["expr"])
            if not answered:
                empty.append(panel["title"])
        assert empty == [], f"panels without data: {empty}"
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        for process in processes:
            stop(process)
