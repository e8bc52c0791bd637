"""Batched inference vs the bare model, fp32 / fp16 / bf16, images per second (CUDA or CPU).

Run: python benchmarks/gpu_inference.py [--device cuda] [--frames 64] [--batches 1,8,32]
Fetal head U-Net on phantom frames. Reference: the bare forward pass, batch 1, fp32, measured
in the same run. Reduced precision runs under torch.autocast and is reported "safe" when the
thresholded masks agree with fp32 (Dice >= 0.99 on every frame); fp16 only on CUDA. The last
rows are the predictor (preprocess, forward, resize, mask clean-up, ellipse, quality) at its
configured batch size, the path the worker runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from worker.models._nn.predictor import preprocess
from worker.models.fetal_head.phantoms import make_fetal_head_frame
from worker.models.fetal_head.predictor import FetalHeadPredictor
from worker.models.fetal_head.serve import DEFAULT_WEIGHTS

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(fn: Callable[[], Any], frames: int, device: str, repeats: int) -> float:
    """Images per second, best of ``repeats`` after one warm-up."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return frames / best


def _forward(
    net: Any, inputs: torch.Tensor, batch: int, dtype: torch.dtype | None, device: str
) -> Callable[[], torch.Tensor]:
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def run() -> torch.Tensor:
        outs = []
        context = torch.autocast(kind, dtype=dtype) if dtype is not None else nullcontext()
        with torch.inference_mode(), context:
            for start in range(0, len(inputs), batch):
                outs.append(net(inputs[start : start + batch]).float())
        return torch.cat(outs)

    return run


def _dice_min(a: torch.Tensor, b: torch.Tensor) -> float:
    ma, mb = (a > 0).flatten(1), (b > 0).flatten(1)
    inter = (ma & mb).sum(1).float()
    total = (ma.sum(1) + mb.sum(1)).float().clamp(min=1)
    return float((2 * inter / total).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(f"device: {device} ({name}), torch {torch.__version__}, {args.frames} frames 540x800")

    predictor = FetalHeadPredictor(DEFAULT_WEIGHTS, device)
    net = predictor.model
    images = [make_fetal_head_frame(910000 + i).image for i in range(args.frames)]
    inputs = torch.from_numpy(
        np.stack([preprocess(i, predictor.input_size) for i in images])[:, None]
    ).to(device)

    reference_out = _forward(net, inputs, 1, None, device)()
    reference = _rate(_forward(net, inputs, 1, None, device), args.frames, device, args.repeats)
    print(f"{'what':<36} {'images/s':>9} {'vs bare b1 fp32':>16} {'min Dice vs fp32':>17}")
    for precision, dtype in _DTYPES.items():
        if precision == "fp16" and not device.startswith("cuda"):
            continue
        for batch in (int(b) for b in args.batches.split(",")):
            run = _forward(net, inputs, batch, dtype, device)
            rate = (
                reference
                if (dtype is None and batch == 1)
                else _rate(run, args.frames, device, args.repeats)
            )
            dice = _dice_min(run(), reference_out)
            safe = "" if dtype is None else ("  safe" if dice >= 0.99 else "  NOT safe")
            print(
                f"bare forward, batch {batch:<3} {precision:<6}        {rate:9.1f} "
                f"{rate / reference:15.2f}x {dice:17.4f}{safe}"
            )
    for batch in sorted({1, predictor.batch_size}):
        predictor.batch_size = batch
        rate = _rate(lambda: predictor.predict(images), args.frames, device, args.repeats)
        print(
            f"predictor (whole frame path), batch {batch:<3}  {rate:9.1f} {rate / reference:15.2f}x"
        )


if __name__ == "__main__":
    main()
