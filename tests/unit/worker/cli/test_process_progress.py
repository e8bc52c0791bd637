"""``medseg process`` reports progress per series on a terminal's stderr, never on stdout."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.support.factories import chest_series
from worker.pipeline.batch import process_paths
from worker.pipeline.cache import ModelCache


def test_process_paths_reports_each_series(tmp_path: Path) -> None:
    chest_series(tmp_path / "in" / "a", 0, slices=4)
    chest_series(tmp_path / "in" / "b", 1, slices=4)
    calls: list[tuple[int, int]] = []
    rows, _ = process_paths(
        [tmp_path / "in"], tmp_path / "out", ModelCache("cpu"), lambda d, t: calls.append((d, t))
    )
    assert len(rows) == 2
    assert calls == [(0, 2), (1, 2), (2, 2)]


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
    assert "series    [" in stderr and "] 0/2" in stderr and "] 2/2" in stderr
    assert "#" * 30 in stderr

    stdout, stderr = _run(args, stderr_tty=False)
    assert len(json.loads(stdout)) == 2
    assert "] 2/2" not in stderr, "no bar when stderr is a file or pipe"
