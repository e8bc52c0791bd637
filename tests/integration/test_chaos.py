"""Nothing lost, nothing processed twice: series sent by DCMTK storescu while the worker and
the gateway are SIGKILLed and Redis and PostgreSQL restart (a small run; the 1,000-instance
soak is ``benchmarks/chaos_soak.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos import ChaosConfig, describe, logs, postgres_bindir, run_chaos
from tests.support.tools import need, need_tool

pytestmark = pytest.mark.integration


def test_every_series_has_one_result_and_every_instance_is_kept(tmp_path: Path) -> None:
    need_tool("storescu")
    need_tool("redis-server")
    need("PostgreSQL server binaries (initdb, pg_ctl)", postgres_bindir() is not None)
    config = ChaosConfig(
        series=8,
        instances_per_series=12,
        disruption_every_s=1.5,
        pause_between_series_s=0.6,
        settle_timeout_s=180,
    )
    report = run_chaos(tmp_path / "chaos", config)
    print(describe(report))  # in the test log: what was done to the services
    kinds = {
        what.split(" ")[1] if what.startswith("restart") else what for _, what in report.disruptions
    }
    assert len(report.disruptions) >= 4, describe(report)
    assert {"SIGKILL worker", "SIGKILL gateway", "Redis", "PostgreSQL"} <= kinds, kinds
    assert report.problems == [], describe(report) + "\n" + logs(tmp_path / "chaos")
    assert report.job_states == {"succeeded": config.series}
