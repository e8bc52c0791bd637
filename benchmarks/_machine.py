"""One line about the machine a benchmark's numbers come from (no heavy imports)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine(extra: str = "") -> str:
    """CPU model, cores, the load at start and the Python version, then ``extra``."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, load {load:.1f} at start, "
        f"Python {platform.python_version()}{extra}"
    )
