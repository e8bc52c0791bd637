"""Operator latency: dashboard pages and the CLI, against a reference measured in the same run.

Run: python benchmarks/operator_latency.py [--jobs 2000] [--requests 50] [--cli-runs 5]
[--redis redis://127.0.0.1:6379/12] [--tree PATH] [--no-worker]

A SQLite database seeded with ``--jobs`` jobs (every state, failed deliveries), the real
dashboard (``medseg dashboard`` under uvicorn, logged in) on real Redis with a private key
prefix and one idle Celery worker (``medseg worker``, so the workers answer the dashboard's
and ``medseg status``'s broadcasts), then the same with Redis down (nothing listening on the
broker port).
Pages: median and p95 over ``--requests`` GETs, each against GET /healthz (no dependency
asked) measured alongside. CLI: wall time and CPU time (user + system, which the machine's
load does not inflate) of ``medseg status`` and ``medseg jobs`` as subprocesses, against
``python -c pass``. ``status`` includes its one broadcast to the workers (1 s: it waits that
long for replies), except with the broker down (not asked). ``--tree`` runs the dashboard and
the CLI from another checkout (an older commit, for before/after on the same database).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import machine  # noqa: E402

from db.migrate import upgrade  # noqa: E402
from db.models import (  # noqa: E402
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Result,
    Series,
    Study,
    utcnow,
)
from db.session import make_engine, make_session_factory  # noqa: E402
from worker.dashboard.auth import hash_password  # noqa: E402

PASSWORD = "benchmark password 1"
PAGES = ("/", "/jobs", "/failures")
REDIS_DOWN = "redis://127.0.0.1:1/0"


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def seed(database_url: str, jobs: int) -> None:
    """``jobs`` jobs over studies of 4 series each: all states, a result per finished job,
    a failed delivery on every tenth succeeded one."""
    upgrade(database_url)
    engine = make_engine(database_url)
    states = list(JobState)
    now = utcnow()
    with make_session_factory(engine).begin() as session:
        for n in range(jobs):
            if n % 4 == 0:
                study = Study(study_instance_uid=f"1.2.826.0.1.{n}", accession_number=f"A{n}")
            series = Series(study=study, series_instance_uid=f"1.2.826.0.1.{n}.1", modality="CT")
            state = states[n % len(states)]
            job = Job(
                series=series,
                model_name=("lung-ct-threshold", "fetal-head-unet")[n % 2],
                model_version="1",
                queue="cpu",
                state=state,
                attempts=1,
                created_at=now - timedelta(minutes=n),
                error=f"RuntimeError: benchmark failure {n}"
                if state in (JobState.FAILED, JobState.QUARANTINED)
                else None,
            )
            if state in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW):
                result = Result(model_name=job.model_name, model_version="1")
                failed = n % 10 == 2
                result.deliveries.append(
                    Delivery(
                        destination="pacs",
                        state=DeliveryState.FAILED if failed else DeliveryState.SENT,
                        attempts=5 if failed else 1,
                        error="no association with PACS" if failed else None,
                    )
                )
                job.results.append(result)
            session.add(job)
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path, broker_url: str, prefix: str, tree: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(tree),
        "MEDSEG_DATA_DIR": str(data_dir),
        "MEDSEG_BROKER_URL": broker_url,
        "MEDSEG_BROKER_KEY_PREFIX": prefix,
        "MEDSEG_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD),
        "MEDSEG_DASHBOARD_USER": "operator",
    }


@contextmanager
def medseg(args: Sequence[str], env: dict[str, str], log: Path, port: int) -> Iterator[None]:
    """``medseg ARGS`` running until the block ends; ready once ``port`` accepts."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *args],
            env=env,
            cwd=env["PYTHONPATH"],  # python -m puts the working directory first on the path
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(log.read_text(errors="replace")[-2000:]) from None
                    time.sleep(0.1)
            yield
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def dashboard(env: dict[str, str], log: Path) -> Iterator[str]:
    port = _free_port()
    with medseg(["dashboard", "--port", str(port)], env, log, port):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def worker(env: dict[str, str], log: Path, wanted: bool) -> Iterator[None]:
    """One idle worker (its metrics port says it is up), or nothing when not ``wanted``."""
    if not wanted:
        yield
        return
    port = _free_port()
    args = ["worker", "--queues", "cpu", "--concurrency", "1", "--metrics-port", str(port)]
    with medseg(args, env, log, port):
        time.sleep(3)  # its consumer connects after the metrics endpoint
        yield


def _login(base: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    page = opener.open(f"{base}/login", timeout=30).read().decode()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF token on the login page"
    form = {"username": "operator", "password": PASSWORD, "csrf": match.group(1)}
    opener.open(f"{base}/login", urllib.parse.urlencode(form).encode(), timeout=30).read()
    return opener


def _get(opener: urllib.request.OpenerDirector, url: str) -> tuple[float, str]:
    start = time.perf_counter()
    with opener.open(url, timeout=60) as response:
        body = response.read().decode()
        assert response.status == 200, url
    return time.perf_counter() - start, body


def pages(base: str, requests: int) -> dict[str, list[float]]:
    """Seconds per GET of /healthz and each page, interleaved, after one warm-up each."""
    opener = _login(base)
    times: dict[str, list[float]] = {path: [] for path in ("/healthz", *PAGES)}
    for path in times:
        _get(opener, base + path)
    for _ in range(requests):
        for path, values in times.items():
            values.append(_get(opener, base + path)[0])
    return times


def page_rows(label: str, times: dict[str, list[float]], overview: str) -> None:
    alive = re.search(r'id="workers">workers alive<b>([^<]*)</b>', overview)
    reference = statistics.median(times["/healthz"])
    for path, values in times.items():
        median = statistics.median(values)
        print(
            f"{label:<12} GET {path:<10} {1000 * median:8.1f} {1000 * _pct(values, 95):8.1f} "
            f"{median / reference:8.1f}x"
        )
    if "broker unreachable" in overview:
        print(f"{label:<12} the overview says: broker unreachable")
    elif alive:
        print(f"{label:<12} the overview says: workers alive {alive.group(1)}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli(
    env: dict[str, str], args: Sequence[str], runs: int, expect: int = 0
) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each run of ``args``, which must exit with ``expect``."""
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run(
            args, env=env, cwd=env["PYTHONPATH"], capture_output=True, text=True, check=False
        )
        wall.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - start_cpu)
        assert done.returncode == expect, done.stderr[-2000:]
    return wall, cpu


def cli_rows(data: Path, prefix: str, tree: Path, args: argparse.Namespace) -> None:
    command = [sys.executable, "-m", "worker.cli", "--log-level", "WARNING"]
    print(
        f"{'broker':<12} {'command':<14} {'p50 s':>8} {'max s':>8} {'p50/start':>9} "
        f"{'cpu s':>7} {'cpu/start':>9}"
    )
    env = _env(data, args.redis, prefix, tree)
    down = _env(data, REDIS_DOWN, prefix, tree)
    reference = cli(env, [sys.executable, "-c", "pass"], args.cli_runs)
    rows = {
        ("", "python -c pass"): reference,
        ("redis up", "medseg status"): cli(env, [*command, "status"], args.cli_runs),
        ("redis up", "medseg jobs"): cli(env, [*command, "jobs"], args.cli_runs),
        # Exit 1: status prints a PROBLEM line for the broker.
        ("redis down", "medseg status"): cli(down, [*command, "status"], args.cli_runs, 1),
    }
    base_wall, base_cpu = (max(statistics.median(v), 1e-3) for v in reference)
    for (label, what), (wall, cpu) in rows.items():
        median, cpu_median = statistics.median(wall), statistics.median(cpu)
        print(
            f"{label:<12} {what:<14} {median:8.2f} {max(wall):8.2f} "
            f"{median / base_wall:8.1f}x {cpu_median:7.2f} {cpu_median / base_cpu:8.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to run (default: this)")
    parser.add_argument("--no-worker", action="store_true", help="no Celery worker running")
    args = parser.parse_args()
    tree = args.tree.resolve()
    print(f"machine: {machine()}")
    print(f"code: {tree}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        start = time.perf_counter()
        seed(f"sqlite:///{data / 'medseg.db'}", args.jobs)
        print(f"seeded {args.jobs} jobs in {time.perf_counter() - start:.1f} s (SQLite)")
        prefix = f"medseg-bench-{uuid.uuid4().hex[:8]}:"
        print(f"{'broker':<12} {'request':<14} {'p50 ms':>8} {'p95 ms':>8} {'p50/healthz':>9}")
        up = _env(data, args.redis, prefix, tree)
        with worker(up, root / "worker.log", not args.no_worker):
            for label, broker in (("redis up", args.redis), ("redis down", REDIS_DOWN)):
                env = _env(data, broker, prefix, tree)
                with dashboard(env, root / f"dashboard-{label.replace(' ', '-')}.log") as base:
                    times = pages(base, args.requests)
                    body = _get(_login(base), base + "/")[1]
                page_rows(label, times, body)
            cli_rows(data, prefix, tree, args)


if __name__ == "__main__":
    main()
