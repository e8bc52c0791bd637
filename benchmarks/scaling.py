"""Scaling: jobs per second with 1 and 2 worker processes on the same series, one run.

Run: python benchmarks/scaling.py [--us 8] [--ct 2] [--ct-size 256] [--torch-threads 1]
The real service on loopback (private Redis, SQLite, gateway, `medseg worker --concurrency N`).
A warm-up batch first loads the models in every worker process; then the measured batch is
sent with DCMTK storescu in one association, and the time runs from the first instance sent to
the last job finished. Each series announces its image count (completes on its last instance).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _stack import Stack, ct_series, machine, us_series

from db.jobstate import FINISHED_WITH_RESULT


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _batch(folder: Path, us: int, ct: int, ct_size: int, seed: int) -> int:
    for i in range(us):
        us_series(folder / f"us{i:03d}", seed + i)
    for i in range(ct):
        ct_series(folder / f"ct{i:03d}", seed + 500 + i, 60, ct_size)
    return us + ct


def _run(root: Path, concurrency: int, args: argparse.Namespace) -> tuple[float, float]:
    """(seconds for the measured batch, busy seconds summed over its jobs)."""
    warm = root / f"warm{concurrency}"
    warm_count = _batch(warm, 2 * concurrency, concurrency, args.ct_size, 100 * concurrency)
    batch = root / f"batch{concurrency}"
    count = _batch(batch, args.us, args.ct, args.ct_size, 1000 * concurrency)
    threads = str(args.torch_threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    with Stack(root / f"stack{concurrency}", concurrency=concurrency, worker_env=env) as stack:
        stack.send(warm)
        stack.wait_jobs(warm_count, timeout=600)
        start = time.time()
        stack.send(batch)
        jobs = stack.wait_jobs(warm_count + count, timeout=1200)[warm_count:]
    failed = [j.id for j in jobs if j.state not in FINISHED_WITH_RESULT]
    if failed:
        raise SystemExit(f"jobs failed: {failed}")
    end = max(_epoch(j.finished_at) for j in jobs if j.finished_at is not None)
    busy = sum(
        _epoch(j.finished_at) - _epoch(j.started_at)
        for j in jobs
        if j.finished_at is not None and j.started_at is not None
    )
    return end - start, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--us", type=int, default=8, help="single-frame US series (gpu queue)")
    parser.add_argument("--ct", type=int, default=2, help="60-slice CT series (cpu queue)")
    parser.add_argument("--ct-size", type=int, default=256)
    parser.add_argument("--torch-threads", type=int, default=1, help="per worker process")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in (1, 2):
            results[concurrency] = _run(Path(tmp), concurrency, args)
    count = args.us + args.ct
    print(
        f"{args.us} US frames + {args.ct} CT 60x{args.ct_size}², {args.torch_threads} torch "
        "thread(s) per worker process"
    )
    base = count / results[1][0]
    for concurrency, (seconds, busy) in results.items():
        rate = count / seconds
        print(
            f"{concurrency} worker process(es): {seconds:6.1f} s  {rate:5.2f} series/s  "
            f"{rate / base:.2f}x  (job time summed {busy:.1f} s, "
            f"{busy / seconds:.2f} jobs running on average)"
        )


if __name__ == "__main__":
    main()
