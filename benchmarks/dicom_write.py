"""Saving the service's DICOM outputs: pydicom's writer alone against their sequences encoded
by ``worker.export.sequence_bytes`` (what ``save_atomic`` does), in the same run.

Run: python benchmarks/dicom_write.py [--slices 300] [--size 512] [--rounds 5]

A chest phantom of SLICES x SIZE x SIZE, its lungs by the threshold model (no network), and an
obstetric US frame by the fetal head model: each one's SEG (highdicom) and measurement SR
(TID 1500), built once; then alternating rounds of saving each to memory both ways (best of
each). Prints per document its nested items, the seconds per save both ways, the ratio, and
whether the two files are the same bytes.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from _stack import ct_series, machine, us_series
from pydicom.dataset import Dataset

from worker.core.registry import ModelSpec, get_spec
from worker.export.seg import build_seg
from worker.export.sequence_bytes import pre_encoded
from worker.export.sr import build_sr
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


def _items(ds: Dataset) -> int:
    """Nested items, all levels down."""
    return sum(len(e.value) + sum(_items(i) for i in e.value) for e in ds if e.VR == "SQ")


def _documents(paths: list[Path], spec: ModelSpec, label: str) -> dict[str, Dataset]:
    series = load_series(paths)
    output = spec.load("cpu").predict(series)
    seg = build_seg(series, output, spec)
    sr = build_sr(series, output, spec, seg)
    assert sr is not None, f"{label}: no SR"
    return {f"{label} SEG": seg, f"{label} SR": sr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    ct = f"chest CT {args.slices}x{args.size}x{args.size}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = ct_series(root / "ct", 11, slices=args.slices, size=args.size)
        documents = _documents(paths, get_spec("lung-ct-threshold"), ct)
        documents.update(
            _documents(us_series(root / "us", 21), get_spec("fetal-head-unet"), "US 540x800")
        )
    print(f"best of {args.rounds} saves to memory, seconds")
    print(f"{'document':<34}{'items':>7}{'pydicom':>10}{'encoded':>10}{'ratio':>8}  same bytes")
    for label, ds in documents.items():
        best = {False: float("inf"), True: float("inf")}
        written: dict[bool, bytes] = {}
        for _ in range(args.rounds):
            for fast in (False, True):
                seconds, written[fast] = _save(ds, fast)
                best[fast] = min(best[fast], seconds)
        same = "yes" if written[False] == written[True] else "NO"
        print(
            f"{label:<34}{_items(ds):>7}{best[False]:>10.4f}{best[True]:>10.4f}"
            f"{best[False] / best[True]:>7.2f}x  {same}"
        )


if __name__ == "__main__":
    main()
