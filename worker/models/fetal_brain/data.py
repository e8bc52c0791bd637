"""Fetal brain MRI data: NIfTI image/mask pairs, slices for training, per-stack metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from worker.models.fetal_brain.predict import Mask, normalise_stack

logger = logging.getLogger(__name__)

INPUT_SIZE = (256, 256)  # 256 keeps CPU inference fast
MODEL_VERSION = "1.0.0"


def training_slices(
    image: npt.NDArray[Any], mask: Mask
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Every slice of a stack at the input size: uint8 images and soft (0-255) masks."""
    rows, cols = INPUT_SIZE
    normalised = normalise_stack(image)
    images = np.stack(
        [cv2.resize(s, (cols, rows), interpolation=cv2.INTER_AREA) for s in normalised]
    )
    soft = [
        cv2.resize(m.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA) for m in mask
    ]
    return images, np.round(np.stack(soft) * 255).astype(np.uint8)


def metrics(pred: Mask, truth: Mask) -> dict[str, float]:
    """Dice, IoU, sensitivity and specificity over the voxels of a stack."""
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    tn = float((~pred & ~truth).sum())
    return {
        "dice": 2 * tp / max(2 * tp + fp + fn, 1.0),
        "iou": tp / max(tp + fp + fn, 1.0),
        "sensitivity": tp / max(tp + fn, 1.0),
        "specificity": tn / max(tn + fp, 1.0),
    }


def nifti_pairs(
    folder: Path,
) -> Iterator[tuple[str, npt.NDArray[Any], Mask, tuple[float, float, float]]]:
    """(name, image (slices, rows, cols), mask, (row mm, col mm, slice mm)) for each
    ``NAME_image.nii[.gz]`` with its ``NAME_mask.nii[.gz]`` in ``folder``."""
    import nibabel as nib

    images = sorted(folder.glob("*_image.nii*"))
    if not images:
        raise FileNotFoundError(f"{folder}: no NAME_image.nii.gz / NAME_mask.nii.gz pairs")
    for image_path in images:
        mask_path = image_path.with_name(image_path.name.replace("_image.", "_mask."))
        if not mask_path.exists():
            raise FileNotFoundError(f"{mask_path} missing")
        image_nii: Any = nib.load(image_path)
        mask_nii: Any = nib.load(mask_path)
        zooms = [float(z) for z in image_nii.header.get_zooms()[:3]]
        order = stack_order(zooms)
        image = np.asarray(image_nii.get_fdata()).transpose(order)
        mask = np.asarray(mask_nii.get_fdata()).transpose(order) > 0
        yield (
            image_path.name.split("_image.")[0],
            image,
            mask,
            (zooms[order[1]], zooms[order[2]], zooms[order[0]]),
        )


def stack_order(zooms: list[float]) -> tuple[int, int, int]:
    """The axes of a NIfTI volume as (slices, rows, columns): the slice axis is the thick
    one (the last on a tie, as stacks are usually stored), rows and columns the other two
    in reverse (NIfTI's i runs along a row)."""
    thick = max(range(3), key=lambda a: (zooms[a], a))
    rest = [a for a in range(3) if a != thick]
    return (thick, rest[1], rest[0])


def load_training_set(
    folder: Path, progress: Callable[[int, int], None] | None = None
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    images: list[npt.NDArray[np.uint8]] = []
    masks: list[npt.NDArray[np.uint8]] = []
    pairs = list(nifti_pairs(folder))
    for i, (_, image, mask, _) in enumerate(pairs):
        x, y = training_slices(image, mask)
        images.append(x)
        masks.append(y)
        if progress:
            progress(i + 1, len(pairs))
    return np.concatenate(images), np.concatenate(masks)
