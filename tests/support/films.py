"""Chest film folders for the lung-field training tests: phantoms in the images/ + masks/
layout with an images.csv naming their patients (as the cxr-lungs set)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from worker.models.lung_cxr.lung_data import write_montgomery_layout


def pairs_layout(folder: Path, seeds: range, patients: list[str]) -> None:
    """Phantoms in the images/ + masks/ layout with an images.csv naming their patients."""
    montgomery = folder.parent / f"{folder.name}-m"
    write_montgomery_layout(montgomery, seeds)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rows = ["image,patient_id,projection,sex"]
    pngs = sorted((montgomery / "CXR_png").glob("*.png"))
    for png, patient in zip(pngs, patients, strict=True):
        shutil.copy(png, folder / "images" / png.name)
        left = cv2.imread(str(montgomery / "ManualMask/leftMask" / png.name), 0)
        right = cv2.imread(str(montgomery / "ManualMask/rightMask" / png.name), 0)
        assert left is not None and right is not None
        cv2.imwrite(str(folder / "masks" / png.name), np.maximum(left, right))
        rows.append(f"{png.name},{patient},pa,f")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
