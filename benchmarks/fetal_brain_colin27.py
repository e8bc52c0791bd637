"""Robustness check of the fetal brain model on a real adult brain: Colin27 (ch2.nii.gz) with
its brain-extracted copy (ch2bet.nii.gz) from Debian's mricron-data. Adult T1 is not the
task (fetal T2), so this measures how far the phantom-trained model is from real anatomy.

Run: python benchmarks/fetal_brain_colin27.py [--templates /usr/share/mricron/templates]
        [--weights PT]   (default: the served 1.0.0; a candidate pair's first stage works too)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from worker.models.fetal_brain.baseline import baseline_mask
from worker.models.fetal_brain.data import metrics
from worker.models.fetal_brain.predict import StackSegmenter
from worker.models.fetal_brain.serve import DEFAULT_BRAIN_WEIGHTS


def _axial(path: Path) -> Any:
    volume = np.asarray(nib.load(path).get_fdata())  # type: ignore[attr-defined]
    return volume.transpose(2, 1, 0)[:, ::-1, :]  # (slices, rows, columns), anterior up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--templates", type=Path, default=Path("/usr/share/mricron/templates"))
    parser.add_argument("--weights", type=Path, default=DEFAULT_BRAIN_WEIGHTS)
    args = parser.parse_args()
    image = _axial(args.templates / "ch2.nii.gz")
    truth = _axial(args.templates / "ch2bet.nii.gz") > 0
    segmenter = StackSegmenter(args.weights, "cpu")
    print(f"Colin27: {image.shape[0]} axial slices of {image.shape[1]}x{image.shape[2]}, 1 mm")
    variants = (("T1 as is", image), ("T1 inverted (T2-like contrast)", image.max() - image))
    for name, stack in variants:
        start = time.perf_counter()
        unet = segmenter.segment(stack, (1.0, 1.0, 1.0)).mask
        seconds = time.perf_counter() - start
        base = baseline_mask(stack.astype(np.float32))
        for method, mask in (("U-Net", unet), ("baseline", base)):
            m = metrics(mask, truth)
            print(
                f"{name:<32} {method:<9} Dice {m['dice']:.3f}  IoU {m['iou']:.3f}  "
                f"sens {m['sensitivity']:.3f}  spec {m['specificity']:.3f}  "
                f"volume {mask.sum() / 1000:.0f} mL (truth {truth.sum() / 1000:.0f} mL)"
            )
        print(f"{'':32} U-Net took {seconds:.1f} s on CPU")


if __name__ == "__main__":
    main()
