"""``medseg studies`` as a subprocess: filters, the table, unrouted series with their reason,
one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import DeliveryState, JobState, SeriesStatus
from tests.support.studies import add_study
from worker.cli.main import main
from worker.core.settings import Settings


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "--log-level", "WARNING", "studies", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ids(out: str) -> list[int]:
    lines = out.splitlines()[1:-1]
    return [int(line.split()[0]) for line in lines if line.split()[0].isdigit()]


def test_studies_from_the_command_line(
    settings: Settings,
    session_factory: sessionmaker[Session],
    cli: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ct = add_study(
        session_factory,
        "1.8.1",
        patient_id="P-1",
        accession="A-1",
        study_date="20261101",
        series=[
            {
                "modality": "CT",
                "calling_ae": "CT_SCANNER",
                "jobs": [("lung-ct", JobState.SUCCEEDED)],
                "delivery": DeliveryState.FAILED,
            }
        ],
    )
    mr = add_study(
        session_factory,
        "1.8.2",
        patient_id="P-2",
        accession="A-2",
        study_date="20261120",
        series=[
            {
                "modality": "MR",
                "calling_ae": "MR_ROOM",
                "body_part_examined": "KNEE",
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
                "status": SeriesStatus.UNROUTED,
            }
        ],
    )
    env = {**os.environ, "MEDSEG_DATABASE_URL": settings.database_url}
    everything = _run(env)
    assert everything.returncode == 0, everything.stderr
    assert _ids(everything.stdout) == [mr, ct]
    assert everything.stdout.splitlines()[-1] == "2 studies"
    row = next(line for line in everything.stdout.splitlines() if line.startswith(f"{ct:>6} "))
    assert row.split()[3:10] == [
        "2026-11-01",
        "P-1",
        "A-1",
        "CT",
        "CT_SCANNER",
        "succeeded",
        "1,",
    ]
    assert "delivery_failed" in row and row.endswith("1.8.1")
    lines = everything.stdout.splitlines()
    under_mr = lines[lines.index(next(line for line in lines if line.startswith(f"{mr:>6} "))) + 1]
    assert re.fullmatch(
        r" +series \d+ MR: no model accepts modality MR, body part KNEE .*", under_mr
    )

    # The filters in this process (``cli``; each subprocess is a second of imports); the
    # listing above and the errors below go through the real command.
    for args, expected in (
        (["--patient-id", "P-2"], [mr]),
        (["--accession", "A-1"], [ct]),
        (["--since", "2026-11-10"], [mr]),
        (["--until", "20261110"], [ct]),
        (["--modality", "ct"], [ct]),
        (["--calling-ae", "MR_ROOM"], [mr]),
        (["--state", "unrouted"], [mr]),
        (["--state", "delivery_failed"], [ct]),
        (["--model", "lung-ct"], [ct]),
        (["--sort", "study_date", "--ascending"], [ct, mr]),
        (["--patient-id", "P-1", "--state", "failed"], []),
    ):
        assert main(["--log-level", "WARNING", "studies", *args]) == 0, args
        assert _ids(capsys.readouterr().out) == expected, args
    assert main(["--log-level", "WARNING", "studies", "--limit", "1"]) == 0
    limited = capsys.readouterr().out
    assert _ids(limited) == [mr]
    assert limited.splitlines()[-1] == "2 studies (the first 1; --limit N shows more)"

    backwards = _run(env, "--since", "2026-12-01", "--until", "2026-11-01")
    assert backwards.returncode == 2 and "Traceback" not in backwards.stderr
    assert backwards.stderr.strip() == (
        "medseg studies: the date range ends (2026-11-01) before it starts (2026-12-01)"
    )
    bad_date = _run(env, "--since", "yesterday")
    assert bad_date.returncode == 2 and "give a date" in bad_date.stderr
    helped = _run(env, "--help")
    assert helped.returncode == 0 and "--patient-id" in helped.stdout
