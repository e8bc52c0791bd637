"""``medseg process`` reports progress in steps (three per series: decoded, model run,
exported) on a terminal's stderr, never on stdout."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tests.support.factories import chest_series
from worker.pipeline.batch import process_paths
from worker.pipeline.cache import ModelCache


@pytest.mark.parametrize("overlap", [True, False])
def test_process_paths_reports_each_step_of_each_series(tmp_path: Path, overlap: bool) -> None:
    """Issue 21 item 10: one 40-slice CT jumped 0/1 -> 1/1; now the bar moves as each series
    is decoded, run and exported (also when a series fails)."""
    chest_series(tmp_path / "in" / "a", 0, slices=4)
    chest_series(tmp_path / "in" / "b", 1, slices=4)
    broken = chest_series(tmp_path / "in" / "c", 2, slices=4)
    for path in broken:  # no slice positions: its model fails on it
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    calls: list[tuple[int, int]] = []
    rows, _ = process_paths(
        [tmp_path / "in"],
        tmp_path / "out",
        ModelCache("cpu"),
        lambda d, t: calls.append((d, t)),
        overlap=overlap,
    )
    assert len(rows) == 3 and sum(row.error is not None for row in rows) == 1
    dones = [done for done, total in calls if total == 9]
    assert len(dones) == len(calls) and dones[0] == 0 and dones[-1] == 9
    assert dones == sorted(set(dones))  # it only moves forward
    if overlap:  # each step on its own (sequentially the model and the export are one call)
        assert dones == list(range(10))


def _run(args: list[str], stderr_tty: bool) -> tuple[str, str]:
    command = [sys.executable, "-m", "worker.cli", "--log-level", "ERROR", *args]
    if not stderr_tty:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=slave, timeout=300, check=False
        )
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return done.stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    chest_series(tmp_path / "in" / "a", 2, slices=4)
    chest_series(tmp_path / "in" / "b", 3, slices=4)
    args = ["process", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json"]

    stdout, stderr = _run(args, stderr_tty=True)
    assert len(json.loads(stdout)) == 2, "stdout stays pure JSON"
    assert "steps     [" in stderr and "] 0/6" in stderr and "] 6/6" in stderr
    assert "] 3/6" in stderr or "] 4/6" in stderr  # it moves within the batch
    assert "#" * 30 in stderr

    stdout, stderr = _run(args, stderr_tty=False)
    assert len(json.loads(stdout)) == 2
    assert "] 6/6" not in stderr, "no bar when stderr is a file or pipe"
