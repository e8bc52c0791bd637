"""Train the lung CT U-Net (``medseg train lung-ct``): axial slices labelled by the classical
reference (HU threshold + components + airway removal), from chest CT phantoms and the real
pyradiomics CT ``lung1``. ``lung2`` is never used here: it is held out for evaluation.

The network predicts one class, lung (both lungs); left and right are then separated in 3D and
named from patient coordinates by the same code the reference uses, so left/right can never be
swapped by a mirrored image and horizontal flips are a valid augmentation.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from worker.core.commands import Progress
from worker.models._nn.train import TrainConfig, fit, saved_summary
from worker.models.lung_ct.phantoms import make_chest_phantom
from worker.models.lung_ct.serve import hu_to_uint8
from worker.models.lung_ct.volume import CtVolume, pyradiomics_case, read_nrrd
from worker.models.lung_ct_threshold.serve import segment_lungs
from worker.pipeline.loading import VolumeGeometry

logger = logging.getLogger(__name__)

MODEL_NAME = "lung-ct-unet"
MODEL_VERSION = "1.0.0"
INPUT_SIZE = (128, 128)  # 128 trains in minutes on two CPU threads
TRAIN_PHANTOMS = range(1000, 1010)  # evaluation uses other seeds (evaluate.EVAL_PHANTOMS)
REAL_REPEATS = 3  # lung1 48 slices weigh like 144 against 400 phantom slices
# The shipped checkpoint's settings: base width 8 (16-64 is usual) keeps an epoch near
# a minute on two shared CPU threads; 14 epochs of one-cycle AdamW.
DEFAULT_CONFIG = TrainConfig(epochs=14, batch_size=16, learning_rate=3e-3, base=8, depth=4, seed=0)
TRAIN_LABEL = (
    "chest CT phantoms (seeds {start}-{stop}) + pyradiomics 3.0.1 lung1 (real CT, x{repeats}); "
    "labels from the HU-threshold reference; lung2 held out. NOT clinically validated."
)

Arrays = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
Mask = npt.NDArray[np.bool_]


def training_slices(hu: npt.NDArray[Any], lungs: npt.NDArray[np.bool_]) -> Arrays:
    """Every axial slice at the input size: uint8 images and soft (0-255) lung masks."""
    rows, cols = INPUT_SIZE
    images = np.stack(
        [cv2.resize(s, (cols, rows), interpolation=cv2.INTER_AREA) for s in hu_to_uint8(hu)]
    )
    soft = [
        cv2.resize(m.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA) for m in lungs
    ]
    return images, np.round(np.stack(soft) * 255).astype(np.uint8)


def reference_lungs(volume: CtVolume) -> npt.NDArray[np.bool_]:
    left, right = segment_lungs(volume.hu.astype(np.float32), volume.geometry)
    both: npt.NDArray[np.bool_] = left | right
    return both


def phantom_case(seed: int, slices: int = 40) -> tuple[CtVolume, tuple[Mask, Mask]]:
    """A chest phantom of seed-dependent matrix size (128-192) over a ~345 mm field, with its
    exact (left, right) lung masks."""
    size = (128, 160, 192)[seed % 3]
    phantom = make_chest_phantom(
        slices=slices, size=size, pixel_spacing=345.0 / size, slice_spacing=5.0, seed=seed
    )
    x0, y0, z0 = phantom.origin
    positions = np.array([[x0, y0, z0 + k * phantom.slice_spacing] for k in range(slices)])
    geometry = VolumeGeometry(
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        positions=positions,
        pixel_spacing=(phantom.pixel_spacing, phantom.pixel_spacing),
    )
    volume = CtVolume(hu=phantom.hu, geometry=geometry, name=f"phantom{seed}")
    return volume, (phantom.left_lung, phantom.right_lung)


def _phantom_slices(seed: int) -> Arrays:
    volume, _ = phantom_case(seed)
    return training_slices(volume.hu, reference_lungs(volume))


def training_set(data_dir: Path, phantoms: range, workers: int = 1) -> Arrays:
    real = read_nrrd(pyradiomics_case(data_dir, "lung1"))
    real_x, real_y = training_slices(real.hu, reference_lungs(real))
    with Pool(max(1, workers)) as pool:
        parts = pool.map(_phantom_slices, phantoms)
    images = [p[0] for p in parts] + [real_x] * REAL_REPEATS
    masks = [p[1] for p in parts] + [real_y] * REAL_REPEATS
    return np.concatenate(images), np.concatenate(masks)


def train_lung_ct(
    data_dir: Path,
    out: Path,
    config: TrainConfig,
    device: str,
    *,
    phantoms: range = TRAIN_PHANTOMS,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Build the training set, fit (best epoch by validation Dice), save ``out`` (+ .json)."""
    import torch

    if device == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    images, masks = training_set(data_dir, phantoms, workers=min(2, os.cpu_count() or 1))
    logger.info("training on %d slices of %s", len(images), INPUT_SIZE)
    label = TRAIN_LABEL.format(start=phantoms.start, stop=phantoms.stop - 1, repeats=REAL_REPEATS)
    return fit(
        images,
        masks,
        config,
        device,
        out=out,
        identity=(MODEL_NAME, MODEL_VERSION, label),
        progress=progress,
    )


def command(args: argparse.Namespace, progress: Progress) -> str:
    """``medseg train lung-ct``: ``args.data`` holds the pyradiomics lung1_image.nrrd."""
    config = replace(
        DEFAULT_CONFIG,
        epochs=args.epochs or DEFAULT_CONFIG.epochs,
        batch_size=args.batch_size or DEFAULT_CONFIG.batch_size,
        max_seconds=args.max_seconds,
    )
    meta = train_lung_ct(args.data, args.out, config, args.device, progress=progress)
    return saved_summary(args.out, meta)
