"""The fetal brain model on real stacks through DICOM: each ``NAME_image.nii.gz`` (with its
``NAME_mask.nii.gz``) written as an MR series, run through ``medseg process`` as a modality's
series would be, and its brain volume and status set beside the manual mask's.

Run: python benchmarks/fetal_brain_real.py --data ../shared/data/fetal-brain-real-val
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from worker.models.fetal_brain.mr_dicom import write_nifti_stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the shipped one)")
    args = parser.parse_args()
    env = dict(os.environ)
    # The model is phantom-only, so off by default; this measures it (research).
    env.setdefault("MEDSEG_RESEARCH_MODELS", '["fetal-brain-unet"]')
    if args.weights:
        env["MEDSEG_FETAL_BRAIN_WEIGHTS"] = str(args.weights.resolve())
    print(f"{'stack':<14}{'manual mL':>10}{'DICOM mL':>10}{'error':>8}  status")
    with tempfile.TemporaryDirectory() as tmp:
        for image in sorted(args.data.glob("*_image.nii*")):
            name = image.name.split("_image.")[0]
            mask_nii = nib.load(image.with_name(image.name.replace("_image.", "_mask.")))
            manual = float((np.asarray(mask_nii.dataobj) > 0).sum())
            manual *= float(np.prod(mask_nii.header.get_zooms()[:3])) / 1000
            series = Path(tmp) / name
            write_nifti_stack(image, series)
            done = subprocess.run(
                [sys.executable, "-m", "worker.cli.main", "process", str(series), "--out",
                 str(Path(tmp) / f"{name}-out"), "--json"],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            rows = json.loads(done.stdout) if done.stdout.strip() else [{}]
            row = rows[0]
            volume = row.get("measurements", {}).get("brain_volume_ml")
            status = row.get("status", f"exit {done.returncode}: {done.stderr[-200:]}")
            shown = f"{volume:>10.1f}{100 * (volume - manual) / manual:>+7.1f}%" if volume else ""
            why = "; ".join(row.get("review") or [])
            print(f"{name:<14}{manual:>10.1f}{shown:>18}  {status} {why}".rstrip())


if __name__ == "__main__":
    main()
