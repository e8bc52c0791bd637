"""Chaos soak: 1,000 instances in 50 series sent with DCMTK storescu while the worker and
the gateway are SIGKILLed and Redis and PostgreSQL restart, every few seconds, in turn.

Run: python benchmarks/chaos_soak.py [--series 50] [--instances 20] [--every 3]
Prints what was done and what was found; exits 1 when anything was lost or processed twice.
The same harness runs small in CI: tests/integration/test_chaos.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.chaos import ChaosConfig, describe, logs, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--instances", type=int, default=20, help="instances per series")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between disruptions")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between series")
    parser.add_argument("--workdir", type=Path, help="keep logs and data here")
    parser.add_argument(
        "--row-per-instance",
        action="store_true",
        help="gateway with MEDSEG_BATCH_INDEX=false (one DB transaction per C-STORE)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = ChaosConfig(
        series=args.series,
        instances_per_series=args.instances,
        disruption_every_s=args.every,
        pause_between_series_s=args.pause,
        settle_timeout_s=900,
        extra_env=(("MEDSEG_BATCH_INDEX", "false"),) if args.row_per_instance else (),
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medseg-chaos-"))
    report = run_chaos(workdir, config)
    print(describe(report))
    if report.problems:
        print(logs(workdir))
        return 1
    print(
        f"OK: {report.instances_sent} instances, {report.series_sent} series, "
        f"{len(report.disruptions)} disruptions, nothing lost, nothing processed twice"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
