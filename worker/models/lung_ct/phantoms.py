"""A chest CT phantom: body, lungs with vessels, heart, spine, trachea and bronchi, noise.

Ground truth (left/right lung masks) is exact; the series is written as real CT Image Storage
instances with consistent geometry (LPS, axial, head-first supine).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.uid import CTImageStorage, generate_uid

from worker.models._phantom_dicom import (
    phantom_dataset,
    set_ct_image,
    set_mono16_pixels,
    set_plane,
)

Mask = npt.NDArray[np.bool_]


@dataclass
class ChestPhantom:
    hu: npt.NDArray[np.int16]  # (slices, rows, columns)
    left_lung: Mask
    right_lung: Mask
    pixel_spacing: float
    slice_spacing: float
    origin: tuple[float, float, float]  # ImagePositionPatient of the first (lowest z) slice


def make_chest_phantom(
    *,
    slices: int = 40,
    size: int = 192,
    pixel_spacing: float = 1.8,
    slice_spacing: float = 5.0,
    seed: int = 0,
) -> ChestPhantom:
    rng = np.random.default_rng(seed)
    half = size * pixel_spacing / 2.0
    z = (np.arange(slices) - (slices - 1) / 2.0) * slice_spacing
    y = np.arange(size) * pixel_spacing - half + pixel_spacing / 2  # + is posterior
    x = np.arange(size) * pixel_spacing - half + pixel_spacing / 2  # + is patient left
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    scale = rng.uniform(0.9, 1.1)
    z_top = z.max()

    hu = np.full(zz.shape, -1000.0)
    body = (xx / (150 * scale)) ** 2 + ((yy - 5) / (105 * scale)) ** 2 <= 1
    inner = (xx / (140 * scale)) ** 2 + ((yy - 5) / (95 * scale)) ** 2 <= 1
    hu[body] = -100.0  # subcutaneous fat
    hu[inner] = 40.0  # muscle / mediastinum

    lung_half_height = 0.45 * slices * slice_spacing
    lz = zz / lung_half_height

    def lung(cx: float) -> Mask:
        inside: Mask = ((xx - cx) / (55 * scale)) ** 2 + ((yy + 5) / (70 * scale)) ** 2 + lz**2 <= 1
        return inside

    heart = ((xx - 25) / 45) ** 2 + ((yy + 30) / 40) ** 2 + (
        (zz + 0.2 * lung_half_height) / 50
    ) ** 2 <= 1
    right_lung = lung(-72 * scale) & ~heart
    left_lung = lung(72 * scale) & ~heart
    lungs = left_lung | right_lung
    hu[lungs] = -850.0

    # Vessels: small soft-tissue spheres inside the lungs (part of the lung mask).
    for _ in range(60):
        idx = rng.integers(0, lungs.size)
        if not lungs.flat[idx]:
            continue
        k, j, i = np.unravel_index(idx, lungs.shape)
        r = rng.uniform(2.0, 4.5)
        sphere = (xx - x[i]) ** 2 + (yy - y[j]) ** 2 + (zz - z[k]) ** 2 <= r * r
        hu[sphere & lungs] = 30.0

    hu[heart] = 45.0
    spine = (xx / 18) ** 2 + ((yy - 75 * scale) / 18) ** 2 <= 1
    hu[spine] = 650.0

    # Trachea from the top down to the carina, then a bronchus into each lung.
    carina = 0.15 * lung_half_height
    trachea = (xx**2 + (yy + 20) ** 2 <= 9**2) & (zz >= carina)
    t = np.clip((carina - zz) / 40.0, 0, 1)
    bronchus_l = ((xx - 40 * t) ** 2 + (yy + 20) ** 2 <= 6**2) & (zz < carina) & (zz > carina - 40)
    bronchus_r = ((xx + 40 * t) ** 2 + (yy + 20) ** 2 <= 6**2) & (zz < carina) & (zz > carina - 40)
    airway = trachea | bronchus_l | bronchus_r
    hu[airway & ~lungs & inner & (zz <= z_top)] = -1000.0
    hu[airway & lungs] = -950.0

    table = (yy > 115 * scale) & (yy < 125 * scale) & (np.abs(xx) < 160)
    hu[table] = 150.0

    hu += rng.normal(0.0, 18.0, size=hu.shape)
    hu = np.clip(hu, -1024, 3000)
    origin = (float(x[0]), float(y[0]), float(z[0]))
    return ChestPhantom(
        hu=hu.astype(np.int16),
        left_lung=left_lung,
        right_lung=right_lung,
        pixel_spacing=pixel_spacing,
        slice_spacing=slice_spacing,
        origin=origin,
    )


def phantom_volume_ml(mask: Mask, phantom: ChestPhantom) -> float:
    return float(mask.sum() * phantom.pixel_spacing**2 * phantom.slice_spacing / 1000.0)


def write_chest_series(
    phantom: ChestPhantom,
    out_dir: Path,
    *,
    patient_id: str = "PHANTOM-0001",
    study_uid: str | None = None,
    series_description: str = "CHEST PHANTOM",
    body_part: str = "CHEST",
) -> list[Path]:
    """Write the phantom as a CT series, one file per slice; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    paths: list[Path] = []
    for k, plane in enumerate(phantom.hu):
        ds = phantom_dataset(
            CTImageStorage,
            study_uid=study_uid,
            series_uid=series_uid,
            patient_name="PHANTOM^CHEST",
            patient_id=patient_id,
            patient_sex="O",
            instance_number=k + 1,
        )
        x0, y0, z0 = phantom.origin
        z = z0 + k * phantom.slice_spacing
        set_plane(
            ds,
            frame_uid=frame_uid,
            pixel_mm=phantom.pixel_spacing,
            slice_mm=phantom.slice_spacing,
            orientation=(1, 0, 0, 0, 1, 0),
            position=(x0, y0, z),
        )
        set_mono16_pixels(ds, plane, signed=True)
        set_ct_image(
            ds,
            body_part=body_part,
            series_description=series_description,
            slice_location=z,
            rescale_intercept=0,
            kvp="120",
        )
        path = out_dir / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def command(args: argparse.Namespace) -> None:
    """``medseg phantoms chest-ct``: one CT series folder per seed."""
    for seed in range(args.start, args.start + args.count):
        write_chest_series(make_chest_phantom(seed=seed), args.out / f"ct{seed:05d}")
