"""Label-map banks for synthesis: brain label maps (the CC0 spina bifida atlas, or any folder of
``*/parcellation.nii.gz``) padded, with their outside distance, packed into one ``.npz`` that
travels to a training machine without the NIfTI stack.

Pack layout: ``labels`` (atlases, D, H, W) uint8 tissue labels (0 outside the brain),
``outside_mm10`` the same shape, uint8 distance from the brain in 0.2 mm steps (0 inside,
capped at 51 mm), ``voxel_mm`` and ``names``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

logger = logging.getLogger(__name__)

PAD_VOXELS = 20  # room around the brain for skull and scalp distances
DISTANCE_STEP_MM = 0.2


@dataclass(frozen=True)
class LabelBank:
    labels: npt.NDArray[np.uint8]  # (atlases, D, H, W)
    outside: npt.NDArray[np.uint8]  # distance outside the brain, DISTANCE_STEP_MM units
    voxel_mm: float
    names: tuple[str, ...]

    def select(self, names: list[str]) -> LabelBank:
        idx = [self.names.index(n) for n in names]
        return LabelBank(
            self.labels[idx], self.outside[idx], self.voxel_mm, tuple(self.names[i] for i in idx)
        )

    def without(self, names: list[str]) -> LabelBank:
        return self.select([n for n in self.names if n not in names])


def outside_distance(labels: npt.NDArray[np.uint8], voxel_mm: float) -> npt.NDArray[np.uint8]:
    """Euclidean distance from the brain (labels > 0), in DISTANCE_STEP_MM steps, capped."""
    distance = ndimage.distance_transform_edt(labels == 0) * voxel_mm
    out: npt.NDArray[np.uint8] = np.clip(np.round(distance / DISTANCE_STEP_MM), 0, 255).astype(
        np.uint8
    )
    return out


def bank_from_arrays(
    label_maps: list[npt.NDArray[Any]], voxel_mm: float, names: list[str]
) -> LabelBank:
    """Pad each label map (all of one shape) and compute its outside distance."""
    padded = [
        np.pad(np.asarray(m, dtype=np.uint8), PAD_VOXELS, mode="constant") for m in label_maps
    ]
    outside = [outside_distance(m, voxel_mm) for m in padded]
    return LabelBank(np.stack(padded), np.stack(outside), voxel_mm, tuple(names))


def read_atlas_folder(folder: Path) -> LabelBank:
    """Every ``*/parcellation.nii.gz`` under ``folder`` (one shape, isotropic voxels)."""
    import nibabel as nib

    paths = sorted(folder.glob("*/parcellation.nii.gz"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no */parcellation.nii.gz label maps")
    maps: list[npt.NDArray[Any]] = []
    voxel = 0.0
    for path in paths:
        image: Any = nib.load(path)
        voxel = float(image.header.get_zooms()[0])
        maps.append(np.asarray(image.dataobj))
    return bank_from_arrays(maps, voxel, [p.parent.name for p in paths])


def save_bank(bank: LabelBank, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        labels=bank.labels,
        outside_mm10=bank.outside,
        voxel_mm=np.float32(bank.voxel_mm),
        names=np.array(bank.names),
    )


def load_bank(path: Path) -> LabelBank:
    with np.load(path) as pack:
        return LabelBank(
            pack["labels"],
            pack["outside_mm10"],
            float(pack["voxel_mm"]),
            tuple(str(n) for n in pack["names"]),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--atlas", type=Path, required=True, help="folder of */parcellation.nii.gz")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    bank = read_atlas_folder(args.atlas)
    save_bank(bank, args.out)
    logger.info("packed %d label maps %s into %s", len(bank.names), bank.labels.shape, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
