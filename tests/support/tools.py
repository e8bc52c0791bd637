"""Gates on real tools and services, polling, and the IOD validator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.devtools.localstack import find_dcmtk_tool

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(what: str, available: bool) -> None:
    """Skip a test whose service is missing, but fail it in CI (CI=true), where it must run."""
    if available:
        return
    message = f"{what} is not available"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required)")
    pytest.skip(message)


# DCMTK programs that pynetdicom shadows with console scripts of the same name in the venv.
_DCMTK = frozenset({"storescu", "storescp", "echoscu", "echoscp", "findscu", "movescu", "getscu"})


def need_tool(name: str) -> str:
    """A command from PATH or from this venv's bin (dcmqi's tools install there); for DCMTK's
    programs, DCMTK's own, never pynetdicom's scripts of the same name."""
    if name in _DCMTK:
        path = find_dcmtk_tool(name)
    else:
        path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    need(f"{name} (make system-deps / make venv installs it)", path is not None)
    assert path is not None
    return path


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s")


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines dciodvfy reports for ``path`` (empty = valid IOD)."""
    need_tool("dciodvfy")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    return [line for line in output.splitlines() if line.startswith("Error")]


def dciodvfy_warnings(path: Path) -> list[str]:
    """Warning lines dciodvfy reports for ``path``."""
    need_tool("dciodvfy")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    return [line for line in output.splitlines() if line.startswith("Warning")]


def scrape_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus endpoint on 127.0.0.1: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
