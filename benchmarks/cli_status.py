"""``medseg status`` as a subprocess: wall and CPU time, median of ``--runs``, against
references measured in the same run, interleaved (``python -c pass``, ``medseg --help``).

Run: python benchmarks/cli_status.py [--runs 9] [--jobs 500] [--redis redis://127.0.0.1:6379/12]
[--tree PATH]

A SQLite database seeded with ``--jobs`` jobs, real Redis under a private key prefix and one
idle ``medseg worker`` (it leaves its heartbeat in Redis every 2 s). Rows:

- ``status (heartbeats)``: the usual case, workers read from their heartbeats (no broadcast,
  no Celery import); issue 32 asks for at most 1 s;
- ``status (broadcast)``: a key prefix without heartbeats or a probe's view, so status asks
  the workers (it waits 0.5 s for replies): what a stack whose workers write no heartbeats
  pays;
- ``status (redis down)``: nothing listens on the broker port (exit 1: a PROBLEM line).

CPU time (user + system of the child) is not inflated by other processes on the machine;
wall time is. ``--tree`` runs another checkout (an older commit, for before/after).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import machine  # noqa: E402
from operator_latency import REDIS_DOWN, _env, cli, seed, worker  # noqa: E402

#: What issue 32 item 9 asks of ``medseg status``.
TARGET_S = 1.0


def _wait_for_beat(redis_url: str, prefix: str, timeout_s: float = 60.0) -> None:
    """Until the worker's heartbeat is in Redis (its first comes once its consumer runs)."""
    import redis

    from worker.core.worker_beats import read_beats

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    while not (read_beats(client, prefix) or ([], {}))[0]:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker left no heartbeat in Redis")
        time.sleep(0.2)


def measure(data: Path, prefix: str, tree: Path, args: argparse.Namespace) -> None:
    medseg = [sys.executable, "-m", "worker.cli", "--log-level", "WARNING"]
    up = _env(data, args.redis, prefix, tree)
    bare = _env(data, args.redis, f"medseg-bench-{uuid.uuid4().hex[:8]}:", tree)
    down = _env(data, REDIS_DOWN, prefix, tree)
    cases = {
        "python -c pass": (up, [sys.executable, "-c", "pass"], 0),
        "medseg --help": (up, [*medseg, "--help"], 0),
        "status (heartbeats)": (up, [*medseg, "status"], 0),
        "status (broadcast)": (bare, [*medseg, "status"], 0),
        "status (redis down)": (down, [*medseg, "status"], 1),
    }
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved: a change in the machine's load hits every row
        for name, (env, command, code) in cases.items():
            times, cpus = cli(env, command, 1, code)
            wall[name] += times
            cpu[name] += cpus
    base = max(statistics.median(wall["python -c pass"]), 1e-3)
    help_wall = statistics.median(wall["medseg --help"])
    print(f"{'command':<22} {'p50 s':>7} {'max s':>7} {'p50/--help':>10} {'cpu s':>7}")
    for name in cases:
        median = statistics.median(wall[name])
        print(
            f"{name:<22} {median:7.2f} {max(wall[name]):7.2f} {median / help_wall:9.2f}x "
            f"{statistics.median(cpu[name]):7.2f}"
        )
    status = statistics.median(wall["status (heartbeats)"])
    verdict = "yes" if status <= TARGET_S else "NO"
    print(f"python start: {base:.3f} s")
    print(f"status within {TARGET_S:g} s: {verdict} ({status:.2f} s, median of {args.runs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to run (default: this)")
    args = parser.parse_args()
    tree = args.tree.resolve()
    print(f"machine: {machine()}")
    print(f"code: {tree}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        seed(f"sqlite:///{data / 'medseg.db'}", args.jobs)
        prefix = f"medseg-bench-{uuid.uuid4().hex[:8]}:"
        with worker(_env(data, args.redis, prefix, tree), root / "worker.log", True):
            if (tree / "worker" / "core" / "worker_beats.py").exists():
                _wait_for_beat(args.redis, prefix)
            else:  # an older checkout: its workers write no heartbeats
                time.sleep(3)
            measure(data, prefix, tree, args)


if __name__ == "__main__":
    main()
