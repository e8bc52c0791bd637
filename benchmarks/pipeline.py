"""Pipeline overhead: a job's whole path vs the bare model forward pass on the same tensors.

Run: python benchmarks/pipeline.py [--series 8] [--threads 2]
N single-frame obstetric US series (fetal head U-Net). The reference is the network's forward
pass alone on the tensors the pipeline feeds it. The pipeline is measured two ways in the same
run: (1) in process, each series through ``execute_job`` (the worker's code: claim, decode,
preprocess, infer, postprocess, SEG, SR + report.json, DB rows), with a time per stage; (2)
``medseg process`` as a subprocess on the same files (adds interpreter start, imports and
loading the weights once). Goal of issue 9: overhead <= 10% of the forward pass.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _stack import machine, us_series

import worker.fetal.predictor as predictor_module
import worker.pipeline as pipeline_module
from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from dicom_gateway.completion import complete_quiet_series
from dicom_gateway.records import instance_info, record_instance
from worker.jobs import execute_job
from worker.loading import load_series
from worker.models.fetal_head import _as_uint8
from worker.registry import ModelCache, get_spec

_MEDSEG = (sys.executable, "-m", "worker.cli")
STAGES = ("decode", "preprocess", "infer", "postprocess", "seg", "sr+report", "db")
SPENT: dict[str, float] = defaultdict(float)


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start

    return wrapper


def _instrument(model: Any, predictor: Any) -> None:
    """Wrap the stage functions the worker calls (names looked up at call time)."""
    predictor_module.preprocess = _timed("preprocess", predictor_module.preprocess)
    predictor.model = _timed("infer", predictor.model)
    model.predict = _timed("predict", model.predict)
    pipeline_module.load_series = _timed("decode", pipeline_module.load_series)
    pipeline_module.write_seg = _timed("seg", pipeline_module.write_seg)
    pipeline_module.write_sr = _timed("sr+report", pipeline_module.write_sr)


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
    for frame in _as_uint8(load_series(paths).frames):
        x = predictor_module.preprocess(frame, predictor.input_size)
        out.append(torch.from_numpy(np.ascontiguousarray(x[None, None])))
    return out


def _bare(net: Callable[[torch.Tensor], Any], tensors: list[torch.Tensor], repeats: int) -> float:
    """Median seconds of the forward passes alone on ``tensors``."""
    runs = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for x in tensors:
                net(x)
            runs.append(time.perf_counter() - start)
    return statistics.median(runs)


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


def _medseg_process(folder: Path, out: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [*_MEDSEG, "--log-level", "WARNING", "process", str(folder), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"medseg process failed: {done.stderr[-400:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="bare forward repeats (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}, {args.threads} torch threads")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        series = [us_series(root / "in" / f"s{i:02d}", 700 + i) for i in range(args.series + 1)]
        models = ModelCache("cpu")
        model: Any = models.get(get_spec("fetal-head-unet"))
        predictor = model.predictor
        net = predictor.model
        sessions, job_ids = _jobs(root, series)
        _instrument(model, predictor)
        execute_job(sessions, models, root / "warm", job_ids[0])  # warm-up (first SEG etc.)
        SPENT.clear()
        # Paired and interleaved: the machine's load changes less between the two numbers.
        bare = job = 0.0
        for paths, job_id in zip(series[1:], job_ids[1:], strict=True):
            bare += _bare(net, _tensors(paths, predictor), args.repeats)
            start = time.perf_counter()
            state = execute_job(sessions, models, root / "results", job_id)
            job += time.perf_counter() - start
            assert state is not None and state.value == "succeeded", state
        n = args.series
        bare, job = bare / n, job / n
        per = {k: v / n for k, v in SPENT.items()}
        per["postprocess"] = per["predict"] - per["preprocess"] - per["infer"]
        # The rest of the job time: the DB work (claim, result, measurements, outputs rows)
        # plus report.json and the model cache lookup.
        per["db"] = job - sum(per[k] for k in ("decode", "predict", "seg", "sr+report"))
        process_s = _medseg_process(root / "in", root / "process")

    total = args.series + 1
    print(f"{n} single-frame US series (540x800), fetal-head-unet, per series:")
    print(f"{'stage':<28} {'ms':>8} {'vs bare forward':>16}")
    print(f"{'bare forward pass':<28} {bare * 1000:8.1f} {1.0:15.2f}x")
    for stage in STAGES:
        value = per[stage]
        print(f"  {stage:<26} {value * 1000:8.1f} {value / bare:15.2f}x")
    print(f"{'execute_job (worker path)':<28} {job * 1000:8.1f} {job / bare:15.2f}x")
    print(
        f"{'medseg process (subprocess)':<28} {process_s / total * 1000:8.1f} "
        f"{process_s / total / bare:15.2f}x   ({process_s:.1f} s for {total} series, "
        "with start-up and weight loading)"
    )
    print(f"overhead of the worker path over the forward pass: {(job / bare - 1) * 100:.0f}%")


if __name__ == "__main__":
    main()
