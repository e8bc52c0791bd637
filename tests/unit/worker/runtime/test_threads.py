"""Worker pool processes share the node's cores for torch (``worker/runtime/threads.py``)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from worker.runtime.threads import POOL_PROCESSES_ENV, apply_share, core_share, pool_processes


def test_a_prefork_pool_counts_its_processes_a_solo_or_threads_pool_one() -> None:
    assert pool_processes(2, "prefork") == 2
    assert pool_processes(3, None) == 3
    assert pool_processes(None, "prefork") == (os.cpu_count() or 1)
    assert pool_processes(8, "solo") == 1
    assert pool_processes(8, SimpleNamespace(__name__="TaskPool (threads)")) == 1


def test_each_process_takes_its_share_of_the_cores_at_least_one() -> None:
    assert core_share(2, cores=2) == 1
    assert core_share(2, cores=16) == 8
    assert core_share(1, cores=4) == 4
    assert core_share(32, cores=4) == 1


def test_a_pool_process_sets_torch_threads_unless_omp_decides() -> None:
    before = torch.get_num_threads()
    try:
        assert apply_share({"OMP_NUM_THREADS": "3", POOL_PROCESSES_ENV: "2"}) is None
        assert apply_share({}) is None  # no pool size noted: not a pool process
        cores = os.cpu_count() or 1
        threads = apply_share({POOL_PROCESSES_ENV: str(cores)})
        assert threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_worker_notes_its_pool_size_before_forking(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.runtime.tasks import _note_pool_size

    monkeypatch.setenv(POOL_PROCESSES_ENV, "0")  # restored (removed) after the test
    _note_pool_size(sender=SimpleNamespace(concurrency=2, pool_cls="prefork"))
    assert os.environ[POOL_PROCESSES_ENV] == "2"
    _note_pool_size(sender=SimpleNamespace(concurrency=4, pool_cls="solo"))
    assert os.environ[POOL_PROCESSES_ENV] == "1"
