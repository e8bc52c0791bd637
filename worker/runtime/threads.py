"""Torch threads per worker process: a prefork pool's processes share the node's cores.

torch takes every core by default, so a pool of N processes on N cores runs N x N busy
threads. On a 2-core AMD EPYC (Zen 4), two processes with two OpenMP threads each took 77 s
over a served fetal brain stack that took 19 s with one thread each (docs/performance.md).
The worker's parent notes its pool size before forking (``POOL_PROCESSES_ENV``), and each pool
process takes cores / processes threads, at least one, unless ``OMP_NUM_THREADS`` is set.
A solo or threads pool runs everything in one process, which keeps torch's default.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

POOL_PROCESSES_ENV = "MEDSEG_POOL_PROCESSES"


def pool_processes(concurrency: object, pool: object) -> int:
    """How many processes run tasks: the concurrency of a prefork pool, 1 for a solo or
    threads pool (one process)."""
    name = str(getattr(pool, "__name__", pool) or "prefork").lower()
    if "solo" in name or "thread" in name:
        return 1
    if isinstance(concurrency, int) and concurrency > 0:
        return concurrency
    return os.cpu_count() or 1


def core_share(processes: int, cores: int | None = None) -> int:
    """Threads for each of ``processes`` sharing ``cores`` (default: this machine's)."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, processes))


def apply_share(environ: MutableMapping[str, str] = os.environ) -> int | None:
    """In a pool process: torch's intra-op threads set to this process' share of the cores.
    None where ``OMP_NUM_THREADS`` decides or no pool size was noted."""
    if environ.get("OMP_NUM_THREADS") or not environ.get(POOL_PROCESSES_ENV):
        return None
    import torch

    threads = core_share(int(environ[POOL_PROCESSES_ENV]))
    torch.set_num_threads(threads)
    return threads
