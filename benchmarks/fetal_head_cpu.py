"""CPU inference time per fetal head frame: the whole predictor vs the bare forward pass.

Run: python benchmarks/fetal_head_cpu.py [--frames 16] [--threads N]
Prints measured numbers and the ratio to the bare model measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from worker.models._nn.predictor import preprocess
from worker.models.fetal_head.phantoms import make_fetal_head_frame
from worker.models.fetal_head.predictor import FetalHeadPredictor
from worker.models.fetal_head.serve import DEFAULT_WEIGHTS


def _time(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    predictor = FetalHeadPredictor(DEFAULT_WEIGHTS, "cpu")
    frames = [make_fetal_head_frame(900000 + i) for i in range(args.frames)]
    images = [f.image for f in frames]
    spacings = [(f.truth.pixel_mm, f.truth.pixel_mm) for f in frames]
    batch = torch.from_numpy(
        np.stack([preprocess(i, predictor.input_size) for i in images])[:, None]
    )

    def bare(size: int):  # type: ignore[no-untyped-def]
        def run() -> None:
            with torch.inference_mode():
                for start in range(0, len(images), size):
                    predictor.model(batch[start : start + size])

        return run

    def full() -> None:
        for image, spacing in zip(images, spacings, strict=True):
            predictor.predict([image], spacing)

    def full_batched() -> None:
        predictor.predict(images, spacings[0])

    n = len(images)
    bare_ms = {
        size: statistics.median(_time(bare(size), args.repeats)) / n * 1000 for size in (1, 8)
    }
    full_ms = statistics.median(_time(full, args.repeats)) / n * 1000
    batched_ms = statistics.median(_time(full_batched, args.repeats)) / n * 1000
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, {n} frames of 540x800, input {predictor.input_size}"
    )
    reference = min(bare_ms.values())
    for size, ms in bare_ms.items():
        print(f"bare forward pass, batch {size}:       {ms:7.1f} ms/frame   {ms / reference:.2f}x")
    ratio = batched_ms / reference
    print(f"predictor, all frames in one call: {batched_ms:7.1f} ms/frame   {ratio:.2f}x")
    print(
        f"predictor, one frame per call:     {full_ms:7.1f} ms/frame   {full_ms / reference:.2f}x"
    )


if __name__ == "__main__":
    main()
