"""``medseg process`` as a user runs it: a subprocess, JSON out, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom

from tests.support.factories import chest_series
from tests.support.tools import dciodvfy_errors


def _medseg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )


def test_process_json_one_object_per_series(tmp_path: Path) -> None:
    chest_series(tmp_path / "in" / "a", 0, slices=10)
    chest_series(tmp_path / "in" / "b", 1, slices=10, body_part="ABDOMEN", series_description="ABD")
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    done = _medseg(
        "process", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = {row["status"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"succeeded", "skipped"}
    ok = rows["succeeded"]
    assert set(ok) == {
        "study_uid",
        "series_uid",
        "modality",
        "model",
        "model_version",
        "status",
        "error",
        "measurements",
        "outputs",
        "warnings",
        "findings",
        "review",
        "validation",
        "not_for_clinical_use",
    }
    assert ok["modality"] == "CT" and ok["model"] == "lung-ct-unet" and ok["error"] is None
    assert ok["validation"] == "reference-only" and ok["not_for_clinical_use"] is False
    assert set(ok["measurements"]) == {
        "left_lung_volume_ml",
        "right_lung_volume_ml",
        "lung_volume_ml",
    }
    seg_path, sr_path, report_path = ok["outputs"]
    assert json.loads(Path(report_path).read_text())["model"] == "lung-ct-unet"
    assert pydicom.dcmread(sr_path).Modality == "SR"
    assert dciodvfy_errors(Path(sr_path)) == []
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == ok["study_uid"]
    assert dciodvfy_errors(Path(seg_path)) == []
    assert "no model" in rows["skipped"]["error"]
    assert "notes.txt" in done.stderr


def test_process_exit_code_is_non_zero_when_a_series_fails(tmp_path: Path) -> None:
    paths = chest_series(tmp_path / "in", 2, slices=6)
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    done = _medseg("process", str(tmp_path / "in"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 1
    assert "failed" in done.stdout and "PixelSpacing" in done.stdout


def test_process_reports_a_missing_path(tmp_path: Path) -> None:
    done = _medseg("process", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and "no such file" in done.stderr
