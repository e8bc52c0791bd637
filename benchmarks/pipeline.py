"""Pipeline overhead: ``medseg process`` on N series vs the bare model forward pass on the
same tensors, measured in the same run (the pipeline's overhead should stay <= 10 %).

Run: python benchmarks/pipeline.py [--series 16] [--threads 1] [--rounds 2]
N single-frame obstetric US series (fetal head U-Net). The reference is the network's
forward pass alone on the tensors the pipeline feeds it. Measured in the same process,
rounds interleaved (so the machine's load changes less between the numbers):

* ``medseg process`` in process: ``worker.pipeline.batch.process_paths``, the CLI's code, overlapped
  (decode ahead, post-process and export behind, the default) and sequential;
* the worker path: each series through ``execute_job`` (claim, decode, preprocess, infer,
  postprocess, SEG, SR, report.json, DB rows in SQLite), paired with its bare forward pass;
* ``medseg process`` as a subprocess on the same files (adds interpreter start, imports,
  loading the weights).

The per-stage times come from the sequential runs (in the overlapped one they run at once).

``--worker-batch N`` adds cross-series batching (worker.runtime.batch_jobs): the same queued
jobs through the worker's task path (``execute_batch``, as ``run_job`` calls it, every job's
message taken in turn) with batching off (``MEDSEG_BATCH_MAX=1``) and on (N), rounds
alternating, printing US frames/s per worker process and the ratio; ``--worker-only`` runs
just that. ``--device cuda`` runs every part on the GPU; ``--predictor-batch`` overrides the
predictor's batch size for the device (CPU 1, CUDA 16).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _stack import machine, us_series

import worker.models._nn.predictor as predictor_module
import worker.pipeline.run as pipeline_module
from db.jobstate import FINISHED_WITH_RESULT, transition
from db.migrate import upgrade
from db.models import Job, JobState
from db.session import make_engine, make_session_factory
from dicom_gateway.completion import complete_quiet_series
from dicom_gateway.records import instance_info, record_instance
from worker.core.registry import get_spec
from worker.models.fetal_head.images import as_uint8
from worker.pipeline.batch import process_paths
from worker.pipeline.batching import Batching
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import load_series
from worker.runtime.batch_jobs import execute_batch
from worker.runtime.jobs import execute_job

_MEDSEG = (sys.executable, "-m", "worker.cli")
STAGES = (
    ("decode", "decode (read + pixel data)"),
    ("preprocess", "preprocess (resize, normalise)"),
    ("infer", "infer (forward pass in the pipeline)"),
    ("postprocess", "postprocess (full-size map, mask, ellipse, quality, biometry)"),
    ("seg", "SEG encode + write"),
    ("sr", "SR encode + write"),
    ("report", "report.json"),
)
SPENT: dict[str, float] = defaultdict(float)
_LOCK = threading.Lock()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _LOCK:
                SPENT[name] += time.perf_counter() - start

    return wrapper


def _instrument(model: Any, predictor: Any) -> None:
    """Wrap the stage functions the pipeline calls (names looked up at call time)."""
    predictor.model = _timed("infer", predictor.model)
    model.finish = _timed("postprocess", model.finish)
    for module, name, stage in (
        (predictor_module, "preprocess", "preprocess"),
        (pipeline_module, "read_series", "decode"),
        (pipeline_module, "decode_series", "decode"),
        (pipeline_module, "write_seg", "seg"),
        (pipeline_module, "write_sr", "sr"),
        (pipeline_module, "export", "export"),
    ):
        setattr(module, name, _timed(stage, getattr(module, name)))


def _record(session_factory: Any, paths: list[Path]) -> None:
    import pydicom

    for path in paths:
        ds = pydicom.dcmread(path)
        info = instance_info(
            ds,
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
            calling_ae="BENCH",
            path=str(path),
            size_bytes=path.stat().st_size,
        )
        record_instance(session_factory, info)


def _tensors(paths: list[Path], predictor: Any) -> list[torch.Tensor]:
    """The network inputs the pipeline makes for one series."""
    out = []
    for frame in as_uint8(load_series(paths).frames):
        x = predictor_module.preprocess(frame, predictor.input_size)
        out.append(torch.from_numpy(np.ascontiguousarray(x[None, None])))
    return out


def _bare(net: Callable[[torch.Tensor], Any], tensors: list[torch.Tensor]) -> float:
    """Seconds of the forward passes alone on ``tensors``."""
    with torch.inference_mode():
        start = time.perf_counter()
        for x in tensors:
            net(x)
        return time.perf_counter() - start


def _jobs(root: Path, series: list[list[Path]]) -> tuple[Any, list[int]]:
    """Instances recorded as the gateway does, series completed into jobs (SQLite)."""
    url = f"sqlite:///{root / 'medseg.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    for paths in series:
        _record(sessions, paths)
    job_ids = complete_quiet_series(sessions, 1e-6, 3)
    assert len(job_ids) == len(series), job_ids
    return sessions, job_ids


def _process(folder: Path, out: Path, models: ModelCache, *, overlap: bool) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    rows, _ = process_paths([folder], out, models, overlap=overlap)
    seconds = time.perf_counter() - start
    # needs_review ran every stage too (its quality gate flagged it): as good for timing
    assert all(row.status in FINISHED_WITH_RESULT for row in rows), [row.error for row in rows]
    return seconds


def _medseg_process(folder: Path, out: Path, threads: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [*_MEDSEG, "--log-level", "WARNING", "process", str(folder), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    if done.returncode != 0:
        sys.exit(f"medseg process failed: {done.stderr[-400:]}")
    return time.perf_counter() - start


def _row(label: str, ms: float, bare_ms: float, note: str = "") -> None:
    print(f"{label:<58} {ms:8.1f} {ms / bare_ms:7.2f}x {note}")


def _rounds(
    root: Path, models: ModelCache, net: Any, tensors: list[torch.Tensor], rounds: int
) -> tuple[list[float], list[float], list[float], list[float], list[dict[str, float]]]:
    """Bare forward, overlapped (and its forward passes) and sequential ``medseg process``,
    order alternating."""
    bare_runs, overlapped_runs, sequential_runs = [], [], []
    stage_runs: list[dict[str, float]] = []
    overlapped_infer: list[float] = []
    for round_number in range(rounds):
        order = ["bare", "overlapped", "sequential"]
        if round_number % 2:
            order.reverse()
        for what in order:
            if what == "bare":
                bare_runs.append(_bare(net, tensors))
            elif what == "overlapped":
                SPENT.clear()
                overlapped_runs.append(_process(root / "in", root / "ovl", models, overlap=True))
                overlapped_infer.append(SPENT["infer"])
            else:
                SPENT.clear()
                seconds = _process(root / "in", root / "seq", models, overlap=False)
                sequential_runs.append(seconds)
                stages = dict(SPENT)
                stages["report"] = stages["export"] - stages["seg"] - stages["sr"]
                stages["rest"] = seconds - sum(stages[k] for k, _ in STAGES)
                stage_runs.append(stages)
    return bare_runs, overlapped_runs, overlapped_infer, sequential_runs, stage_runs


def _worker_path(
    root: Path, models: ModelCache, net: Any, series: list[list[Path]], tensors: list[Any]
) -> tuple[float, float, float]:
    """execute_job per series, each paired with its bare forward pass: (bare, job, DB) s."""
    sessions, job_ids = _jobs(root, series)
    execute_job(sessions, models, root / "results", job_ids[0])  # warm-up
    SPENT.clear()
    bare = total = 0.0
    for x, job_id in zip(tensors, job_ids[1:], strict=True):
        bare += _bare(net, x)
        start = time.perf_counter()
        state = execute_job(sessions, models, root / "results", job_id)
        total += time.perf_counter() - start
        assert state in FINISHED_WITH_RESULT, state
    stages = ("decode", "preprocess", "infer", "postprocess", "export")
    return bare, total, total - sum(SPENT.get(k, 0.0) for k in stages)


class _Passes:
    """The network, counting its calls (forward passes) and the frames they got."""

    def __init__(self, net: Callable[[torch.Tensor], Any]) -> None:
        self.net = net
        self.calls = self.frames = 0

    def __call__(self, x: torch.Tensor) -> Any:
        self.calls += 1
        self.frames += int(x.shape[0])
        return self.net(x)


def _requeue(sessions: Any, job_ids: list[int]) -> None:
    """The jobs back in the queue, as an operator's re-run puts them (same series, files)."""
    with sessions.begin() as session:
        for job_id in job_ids:
            transition(session.get_one(Job, job_id), JobState.QUEUED)


def _worker_round(
    sessions: Any, models: ModelCache, results: Path, job_ids: list[int], batching: Batching
) -> float:
    """Seconds for one worker process to take every job's message in turn (a job already run
    in another's batch: its message is a duplicate, dropped) and run what it claims."""
    start = time.perf_counter()
    ran = 0
    for job_id in job_ids:
        states = execute_batch(sessions, models, results, job_id, batching=batching)
        assert all(s in FINISHED_WITH_RESULT for s in states.values()), states
        ran += len(states)
    seconds = time.perf_counter() - start
    assert ran == len(job_ids), ran
    return seconds


def _worker_batching(
    root: Path, models: ModelCache, series: list[list[Path]], batch: int, rounds: int
) -> None:
    """US frames/s of one worker process, batching off against on, rounds alternating."""
    (root / "batching").mkdir()
    sessions, job_ids = _jobs(root / "batching", series)
    warm, measured = job_ids[:1], job_ids[1:]
    execute_job(sessions, models, root / "results-b", warm[0])
    model: Any = models.get(get_spec("fetal-head-unet"))
    passes = _Passes(model.predictor.model)
    model.predictor.model = passes
    modes = {"off": Batching(1), "on": Batching(batch)}
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    calls: dict[str, int] = {}
    first = True
    for round_number in range(rounds):
        for mode in ("off", "on") if round_number % 2 == 0 else ("on", "off"):
            if not first:
                _requeue(sessions, measured)
            first = False
            passes.calls = passes.frames = 0
            seconds[mode].append(
                _worker_round(sessions, models, root / "results-b", measured, modes[mode])
            )
            calls[mode] = passes.calls
    model.predictor.model = passes.net
    frames = passes.frames
    n = len(measured)
    rate = {mode: frames / statistics.median(runs) for mode, runs in seconds.items()}
    print(
        f"worker path, {n} queued single-frame US jobs (fetal-head-unet) through one worker "
        f"process on {models.device}, predictor batch size {model.predictor.batch_size}, "
        f"median of {rounds} round(s):"
    )
    print(f"{'':<58} {'frames/s':>9} {'vs off':>7} {'passes':>7}")
    for mode, label in (
        ("off", "batching off (MEDSEG_BATCH_MAX=1)"),
        ("on", f"batching on (MEDSEG_BATCH_MAX={batch})"),
    ):
        print(f"{label:<58} {rate[mode]:9.2f} {rate[mode] / rate['off']:6.2f}x {calls[mode]:7d}")
    ratios = [f"{off / on:.2f}x" for off, on in zip(seconds["off"], seconds["on"], strict=True)]
    print(f"per round, on vs off (frames/s): {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--worker-batch",
        type=int,
        default=0,
        help="also compare the worker path with batching off and at this MEDSEG_BATCH_MAX",
    )
    parser.add_argument(
        "--worker-only", action="store_true", help="only the --worker-batch comparison"
    )
    parser.add_argument(
        "--predictor-batch", type=int, help="the predictor's batch size (default: the device's)"
    )
    args = parser.parse_args()
    if args.worker_only and args.worker_batch < 2:
        parser.error("--worker-only needs --worker-batch 2 or more")
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}, {args.threads} torch thread(s), device {args.device}")
    n = args.series

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        series = [us_series(root / "in" / f"s{i:02d}", 700 + i) for i in range(n)]
        warm = us_series(root / "warm" / "s", 699)
        models = ModelCache(args.device, settle=True)
        model: Any = models.get(get_spec("fetal-head-unet"))
        if args.predictor_batch:
            model.predictor.batch_size = args.predictor_batch
        if args.worker_batch > 1:
            _worker_batching(root, models, [warm, *series], args.worker_batch, args.rounds)
        if args.worker_only:
            return
        _overhead(root, models, model, series, warm, args=args)


def _overhead(
    root: Path,
    models: ModelCache,
    model: Any,
    series: list[list[Path]],
    warm: list[Path],
    *,
    args: argparse.Namespace,
) -> None:
    n = args.series
    net = model.predictor.model
    per_series = [_tensors(paths, model.predictor) for paths in series]
    _instrument(model, model.predictor)
    process_paths([root / "warm"], root / "warm-out", models, overlap=False)  # first SEG etc.
    bare_runs, overlapped_runs, overlapped_infer_runs, sequential_runs, stage_runs = _rounds(
        root, models, net, [x for xs in per_series for x in xs], args.rounds
    )
    job_bare, job_total, job_db = _worker_path(root, models, net, [warm, *series], per_series)
    subprocess_s = _medseg_process(root / "in", root / "process", args.threads)

    bare = statistics.median(bare_runs) / n * 1000
    overlapped = statistics.median(overlapped_runs) / n * 1000
    sequential = statistics.median(sequential_runs) / n * 1000
    overlapped_infer = statistics.median(overlapped_infer_runs) / n * 1000
    stages = {
        k: statistics.median(r.get(k, 0.0) for r in stage_runs) / n * 1000 for k in stage_runs[0]
    }
    print(
        f"{n} single-frame US series (540x800), fetal-head-unet, per series, median of "
        f"{args.rounds} interleaved round(s):"
    )
    print(f"{'':<58} {'ms':>8} {'vs bare':>8}")
    _row("bare forward pass (same tensors)", bare, bare)
    _row("medseg process in process, overlapped (the CLI default)", overlapped, bare)
    _row("  its forward passes, slowed by the threads beside them", overlapped_infer, bare)
    _row("medseg process in process, sequential", sequential, bare)
    for key, label in STAGES:
        _row(f"  {label}", stages[key], bare)
    _row("  rest (header reads, routing, model lookup, rows)", stages["rest"], bare)
    job_bare_ms, job_ms = job_bare / n * 1000, job_total / n * 1000
    _row("execute_job, worker path (vs its paired bare forward)", job_ms, job_bare_ms)
    _row("  bare forward paired with the jobs", job_bare_ms, job_bare_ms)
    _row("  DB (claim, result rows) and the rest", job_db / n * 1000, job_bare_ms)
    _row(
        "medseg process as a subprocess",
        subprocess_s / n * 1000,
        bare,
        f"({subprocess_s:.1f} s for {n} series: start-up, imports, weights, overlapped run)",
    )
    ratios = [
        (f"{o / b:.2f}x", f"{q / b:.2f}x")
        for b, o, q in zip(bare_runs, overlapped_runs, sequential_runs, strict=True)
    ]
    print(f"per round (overlapped, sequential) vs that round's bare forward: {ratios}")
    print(
        f"overhead over the forward pass: overlapped {(overlapped / bare - 1) * 100:.1f} %, "
        f"sequential {(sequential / bare - 1) * 100:.1f} %, worker path "
        f"{(job_ms / job_bare_ms - 1) * 100:.1f} %"
    )


if __name__ == "__main__":
    main()
