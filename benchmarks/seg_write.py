"""Saving a chest CT's SEG: pydicom's writer alone against the per-frame functional groups
encoded by ``worker.export.frame_groups`` (what ``save_atomic`` does), in the same run.

Run: python benchmarks/seg_write.py [--slices 300] [--size 512] [--rounds 5]

A chest phantom of SLICES x SIZE x SIZE, its lungs by the threshold model (no network), one
SEG built by highdicom; then alternating rounds of saving it to memory both ways (best of
each). Prints the frames and per-frame elements, seconds per save, the ratio, and whether the
two files are the same bytes.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from _stack import ct_series, machine
from pydicom.dataset import Dataset

from worker.export.frame_groups import pre_encoded
from worker.export.seg import build_seg
from worker.models.lung_ct_threshold.serve import SPEC
from worker.pipeline.loading import load_series


def _save(ds: Dataset, fast: bool) -> tuple[float, bytes]:
    out = io.BytesIO()
    start = time.perf_counter()
    if fast:
        with pre_encoded(ds):
            ds.save_as(out, enforce_file_format=True)
    else:
        ds.save_as(out, enforce_file_format=True)
    return time.perf_counter() - start, out.getvalue()


def _elements(ds: Dataset) -> int:
    return sum(1 + (_elements_of(e.value) if e.VR == "SQ" else 0) for e in ds)


def _elements_of(items: list[Dataset]) -> int:
    return sum(_elements(item) for item in items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        series = load_series(ct_series(Path(tmp), 11, slices=args.slices, size=args.size))
        seg = build_seg(series, SPEC.load("cpu").predict(series), SPEC)
    frames = seg.PerFrameFunctionalGroupsSequence
    best = {False: float("inf"), True: float("inf")}
    written: dict[bool, bytes] = {}
    for _ in range(args.rounds):
        for fast in (False, True):
            seconds, written[fast] = _save(seg, fast)
            best[fast] = min(best[fast], seconds)
    print(
        f"chest CT {args.slices}x{args.size}x{args.size}: SEG of {len(frames)} frames, "
        f"{_elements_of(frames)} per-frame elements, {len(written[False]) / 1e6:.1f} MB; "
        f"best of {args.rounds}"
    )
    print(f"{'save':<36}{'seconds':>10}{'vs pydicom':>12}")
    print(f"{'pydicom writer':<36}{best[False]:>10.3f}{1.0:>11.2f}x")
    print(
        f"{'per-frame groups pre-encoded':<36}{best[True]:>10.3f}{best[False] / best[True]:>11.2f}x"
    )
    print(f"same bytes: {'yes' if written[False] == written[True] else 'NO'}")


if __name__ == "__main__":
    main()
