"""Label-map banks for synthesis: brain label maps (the CC0 spina bifida atlas, or any folder of
``*/parcellation.nii.gz``) padded, with their outside distance, packed into one ``.npz`` that
travels to a training machine without the NIfTI stack.

Pack layout: ``labels`` (atlases, D, H, W) uint8 tissue labels (0 outside the brain),
``outside_mm10`` the same shape, uint8 distance from the brain in 0.2 mm steps (0 inside,
capped at 51 mm), ``voxel_mm`` and ``names``; optionally ``intensity``, the atlas' own T2
image (``srr.nii.gz``, a super-resolved reconstruction of real fetal stacks) inside the brain,
uint8 with its 99th brain percentile at ``INTENSITY_SCALE`` (0 outside the brain).
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
INTENSITY_SCALE = 200.0


@dataclass(frozen=True)
class LabelBank:
    labels: npt.NDArray[np.uint8]  # (atlases, D, H, W)
    outside: npt.NDArray[np.uint8]  # distance outside the brain, DISTANCE_STEP_MM units
    voxel_mm: float
    names: tuple[str, ...]
    intensity: npt.NDArray[np.uint8] | None = None  # the real T2 brain, when packed

    def select(self, names: list[str]) -> LabelBank:
        idx = [self.names.index(n) for n in names]
        return LabelBank(
            self.labels[idx],
            self.outside[idx],
            self.voxel_mm,
            tuple(self.names[i] for i in idx),
            None if self.intensity is None else self.intensity[idx],
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


def brain_intensity(image: npt.NDArray[Any], labels: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A T2 image inside the brain as uint8, its 99th brain percentile at INTENSITY_SCALE."""
    data = np.asarray(image, dtype=np.float32)
    inside = np.asarray(labels) > 0
    top = float(np.percentile(data[inside], 99)) if inside.any() else 1.0
    scaled = np.clip(data / (top or 1.0) * INTENSITY_SCALE, 0, 255) * inside
    out: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return out


def bank_from_arrays(
    label_maps: list[npt.NDArray[Any]],
    voxel_mm: float,
    names: list[str],
    images: list[npt.NDArray[Any]] | None = None,
) -> LabelBank:
    """Pad each label map (all of one shape) and compute its outside distance; ``images``:
    the matching T2 volumes, kept inside the brain."""
    padded = [
        np.pad(np.asarray(m, dtype=np.uint8), PAD_VOXELS, mode="constant") for m in label_maps
    ]
    outside = [outside_distance(m, voxel_mm) for m in padded]
    intensity = None
    if images is not None:
        intensity = np.stack(
            [
                np.pad(brain_intensity(i, m), PAD_VOXELS, mode="constant")
                for i, m in zip(images, label_maps, strict=True)
            ]
        )
    return LabelBank(np.stack(padded), np.stack(outside), voxel_mm, tuple(names), intensity)


def read_atlas_folder(folder: Path) -> LabelBank:
    """Every ``*/parcellation.nii.gz`` under ``folder`` (one shape, isotropic voxels)."""
    import nibabel as nib

    paths = sorted(folder.glob("*/parcellation.nii.gz"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no */parcellation.nii.gz label maps")
    maps: list[npt.NDArray[Any]] = []
    images: list[npt.NDArray[Any]] = []
    voxel = 0.0
    for path in paths:
        image: Any = nib.load(path)
        voxel = float(image.header.get_zooms()[0])
        maps.append(np.asarray(image.dataobj))
        srr = path.parent / "srr.nii.gz"
        if srr.exists():
            images.append(np.asarray(nib.load(srr).dataobj))  # type: ignore[attr-defined]
    t2 = images if len(images) == len(maps) else None
    return bank_from_arrays(maps, voxel, [p.parent.name for p in paths], t2)


def save_bank(bank: LabelBank, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "labels": bank.labels,
        "outside_mm10": bank.outside,
        "voxel_mm": np.float32(bank.voxel_mm),
        "names": np.array(bank.names),
    }
    if bank.intensity is not None:
        arrays["intensity"] = bank.intensity
    np.savez_compressed(path, **arrays)


def load_bank(path: Path) -> LabelBank:
    with np.load(path) as pack:
        return LabelBank(
            pack["labels"],
            pack["outside_mm10"],
            float(pack["voxel_mm"]),
            tuple(str(n) for n in pack["names"]),
            pack["intensity"] if "intensity" in pack.files else None,
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
