"""Latency: last instance received -> SEG on disk, p50/p95, for a US frame and a 60-slice CT.

Run: python benchmarks/latency.py [--repeats 10] [--ct-size 512]
The real service on loopback (private Redis, SQLite, gateway, one worker process); each series
is sent with DCMTK storescu and announces its image count (Images in Acquisition), so it
completes on its last instance; a series without one waits MEDSEG_SERIES_QUIET_SECONDS more.
"Received" is the series' last_received_at in the DB, "on disk" the SEG file's mtime. The
breakdown: completion + publish (received -> job created), queue (created -> started), job
(started -> SEG written). Printed against the job's own run time measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pydicom
from _stack import Stack, ct_series, machine, us_series


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _trial(stack: Stack, folder: Path, models: set[str]) -> dict[str, float]:
    series_uid = str(
        pydicom.dcmread(next(folder.rglob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID
    )
    stack.send(folder)
    seg, job, series = stack.seg_of(series_uid, timeout=300)
    received = _epoch(series.last_received_at)
    assert job.started_at is not None
    on_disk = seg.stat().st_mtime
    models.add(job.model_name)
    return {
        "total": on_disk - received,
        "completion": _epoch(job.created_at) - received,
        "queue": _epoch(job.started_at) - _epoch(job.created_at),
        "job": on_disk - _epoch(job.started_at),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ct-slices", type=int, default=60)
    parser.add_argument("--ct-size", type=int, default=512)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kinds = {
            "US frame (fetal head)": [
                us_series(root / "us" / f"{i}", 500 + i) for i in range(args.repeats + 1)
            ],
            f"CT {args.ct_slices}x{args.ct_size}²": [
                ct_series(root / "ct" / f"{i}", 600 + i, args.ct_slices, args.ct_size)
                for i in range(args.repeats + 1)
            ],
        }
        results: dict[str, list[dict[str, float]]] = {}
        models: dict[str, set[str]] = {name: set() for name in kinds}
        with Stack(root / "stack", concurrency=1) as stack:
            for name, series in kinds.items():
                _trial(stack, series[0][0].parent, models[name])  # warm-up: model loaded
                runs = []
                for paths in series[1:]:
                    runs.append(_trial(stack, paths[0].parent, models[name]))
                    time.sleep(0.2)
                results[name] = runs
    print(f"{args.repeats} series each, one worker process, completion on announced count")
    print(
        f"{'series':<24} {'p50 s':>7} {'p95 s':>7} {'complete':>9} {'queue':>7} "
        f"{'job':>7} {'p50 / job':>10}"
    )
    for name, runs in results.items():
        total = [r["total"] for r in runs]
        med = {k: statistics.median(r[k] for r in runs) for k in ("completion", "queue", "job")}
        print(
            f"{name:<24} {_pct(total, 50):7.2f} {_pct(total, 95):7.2f} "
            f"{med['completion']:9.2f} {med['queue']:7.2f} {med['job']:7.2f} "
            f"{_pct(total, 50) / med['job']:9.2f}x  {', '.join(sorted(models[name]))}"
        )


if __name__ == "__main__":
    main()
