"""Every model end to end: one phantom series per model at clinical size through the pipeline
(``worker.pipeline.run.run_series``, what ``medseg process`` and the worker call), timed by stage,
against the same networks' forward passes re-run alone on the inputs the pipeline gave them
(the reference, measured in the same run).

Run: python benchmarks/models.py [--device cpu|cuda] [--quick] [--rounds 2] [--threads N]
Series (full size; ``--quick`` for a small CPU): chest CT 300x512x512 (lung-ct-unet), fetal MR
stack of 40 slices (fetal-brain-unet), obstetric US frame 540x800 (fetal-head-unet), chest
radiograph 2000x2000 (lung-cxr), and where ``make test-data`` put it the real 61-slice chest CT
pyradiomics lung2 (MEDSEG_TEST_DATA_DIR, ~/.cache/medseg/data).

Printed per model: series/s, seconds per series and per slice, the forward pass's share of the
series time, the stages (decode, preprocess + forward + postprocess as the model splits them,
SEG, SR, the rest of export) and the ratio of the series time to the bare forward passes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _stack import ct_series, machine, us_series

import worker.pipeline.run as pipeline_module
from worker.core.registry import get_spec
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series

SPENT: dict[str, float] = defaultdict(float)
INPUTS: dict[int, list[Any]] = defaultdict(list)  # network id -> the inputs of the last run
NETS: dict[int, list[torch.nn.Module]] = {}  # model id -> its instrumented networks
STAGES = ("decode", "preprocess", "forward", "postprocess", "seg", "sr", "report", "rest")


@dataclass
class Case:
    label: str
    model: str
    paths: list[Path]
    frames: int


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start

    return wrapper


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _networks(model: Any) -> list[Any]:
    """The objects holding a torch module as ``.model`` (UNetPredictor, the detector), held
    by the model or one level down (the fetal brain's StackSegmenter and its two stages)."""
    found = []
    for value in vars(model).values():
        inner = list(vars(value).values()) if hasattr(value, "__dict__") else []
        for v in (value, *inner):
            if isinstance(getattr(v, "model", None), torch.nn.Module) and v not in found:
                found.append(v)
    return found


def _instrument(model: Any, device: str) -> list[torch.nn.Module]:
    """Time every forward pass of the model's networks (and keep their inputs)."""
    nets = []
    for holder in _networks(model):
        net = holder.model
        nets.append(net)

        def forward(*args: Any, _net: Any = net, **kwargs: Any) -> Any:
            INPUTS[id(_net)].append((args, kwargs))
            _sync(device)
            start = time.perf_counter()
            out = _net(*args, **kwargs)
            _sync(device)
            SPENT["forward"] += time.perf_counter() - start
            return out

        holder.model = forward
    return nets


def _bare(nets: list[torch.nn.Module], device: str) -> float:
    """Seconds of the networks' forward passes alone on the last run's inputs."""
    start = time.perf_counter()
    with torch.inference_mode():
        for net in nets:
            for args, kwargs in INPUTS[id(net)]:
                net(*args, **kwargs)
    _sync(device)
    return time.perf_counter() - start


def _ct(root: Path, quick: bool) -> Case:
    slices, size = (24, 256) if quick else (300, 512)
    paths = ct_series(root / "ct", 11, slices=slices, size=size)
    return Case(f"chest CT {slices}x{size}x{size}", "lung-ct-unet", paths, slices)


def _mr(root: Path, quick: bool) -> Case:
    from worker.models.fetal_brain.mr_dicom import write_mr_stack
    from worker.models.fetal_brain.phantoms import make_fetal_brain_stack

    stack = make_fetal_brain_stack(3 if quick else 26)  # 23 and 40 slices
    paths = write_mr_stack(stack, root / "mr")
    n, rows, cols = stack.image.shape
    return Case(f"fetal MR {n}x{rows}x{cols}", "fetal-brain-unet", paths, n)


def _us(root: Path, quick: bool) -> Case:
    return Case("US frame 540x800", "fetal-head-unet", us_series(root / "us", 21), 1)


def _cr(root: Path, quick: bool) -> Case:
    from worker.models.lung_cxr.cr_dicom import write_cxr
    from worker.models.lung_cxr.phantoms import make_chest_xray

    cxr = make_chest_xray(5, size=512 if quick else 2000)
    write_cxr(cxr, root / "cr" / "cr.dcm")
    rows, cols = cxr.image.shape
    return Case(f"chest film {rows}x{cols}", "lung-cxr", [root / "cr" / "cr.dcm"], 1)


def _real_ct(root: Path, quick: bool) -> Case | None:
    """pyradiomics lung2, a real 61-slice chest CT, where ``make test-data`` put it."""
    from worker.models.lung_ct.volume import read_nrrd, write_ct_series

    data = Path(os.environ.get("MEDSEG_TEST_DATA_DIR", Path.home() / ".cache/medseg/data"))
    if quick or not (data / "lung2_image.nrrd").is_file():
        return None
    volume = read_nrrd(data / "lung2_image.nrrd")
    paths = write_ct_series(volume, root / "lung2", patient_id="PYRADIOMICS-LUNG2")
    return Case("real chest CT lung2 61x512x512", "lung-ct-unet", paths, 61)


CASES: dict[str, Callable[[Path, bool], Case | None]] = {
    "ct": _ct,
    "mr": _mr,
    "us": _us,
    "cr": _cr,
    "lung2": _real_ct,
}


def _measure(
    case: Case, models: ModelCache, root: Path, rounds: int, device: str
) -> dict[str, float]:
    spec = get_spec(case.model)
    model = models.get(spec)
    if id(model) not in NETS:
        NETS[id(model)] = _instrument(model, device)
    nets = NETS[id(model)]
    run_series(case.paths, models, root / "warm", spec)  # first-call costs
    runs: list[dict[str, float]] = []
    for k in range(rounds):
        SPENT.clear()
        INPUTS.clear()
        start = time.perf_counter()
        result = run_series(case.paths, models, root / f"out{k}", spec)
        total = time.perf_counter() - start
        t = result.timings
        stages = {
            "decode": t.get("load", 0.0),
            "forward": SPENT["forward"],
            "preprocess": t.get("preprocess", 0.0),
            "seg": SPENT["seg"],
            "sr": SPENT["sr"],
            "report": t["export"] - SPENT["seg"] - SPENT["sr"],
        }
        # predict (or prepare + forward + finish) less the networks: resize, masks, gate...
        model_s = t.get("preprocess", 0.0) + t["infer"] + t.get("postprocess", 0.0)
        stages["postprocess"] = model_s - stages["forward"] - stages["preprocess"]
        stages["rest"] = total - sum(stages.values())
        stages["total"] = total
        stages["bare"] = _bare(nets, device)
        runs.append(stages)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _print(case: Case, m: dict[str, float]) -> None:
    total = m["total"]
    stages = " ".join(f"{k} {m[k] * 1000:.0f}" for k in STAGES)
    print(
        f"| {case.label} ({case.model}) | {1 / total:.2f} | {total:.3f} | "
        f"{total / case.frames * 1000:.1f} | {m['forward'] / total:.0%} | "
        f"{total / m['bare']:.2f}x | {stages} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="small series (a small CPU)")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per model (median)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch and OpenCV threads (0: their own)"
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated, of " + ",".join(CASES)
    )
    args = parser.parse_args()
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)  # its parallel loops wait on a busy core too
    os.environ["MEDSEG_DEVICE"] = args.device
    # The fetal brain model is phantom-only, so off by default; its speed is measured anyway.
    os.environ.setdefault("MEDSEG_RESEARCH_MODELS", '["fetal-brain-unet"]')
    for name, stage in (("write_seg", "seg"), ("write_sr", "sr")):
        setattr(pipeline_module, name, _timed(stage, getattr(pipeline_module, name)))
    print(f"machine: {machine()}, device {args.device}, {torch.get_num_threads()} torch thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = ModelCache(args.device, settle=True)
        print(
            "| series (model) | series/s | s/series | ms/slice | forward share | vs bare "
            "forward | stages, ms |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name in filter(None, args.cases.split(",")):
            case = CASES[name](root, args.quick)
            if case is None:
                continue
            _print(case, _measure(case, models, root, args.rounds, args.device))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
