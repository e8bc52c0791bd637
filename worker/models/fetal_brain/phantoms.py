"""Fetal brain MRI phantoms: single-shot T2-like stacks with exact brain masks.

A stack (20-60 slices, sagittal, coronal or transverse) shows maternal tissue, amniotic fluid,
and the fetal head: scalp, a dark skull, bright CSF, the brain (cortex darker than white
matter, bright ventricles, folding on its outline). Each slice is displaced by fetal motion
(drift, jumps, small rotations), as in real single-shot acquisitions; a smooth bias field and
Rician noise complete it. Only numpy/scipy here, so training machines need no DICOM stack.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models.fetal_brain.convention import CONVENTIONS, INTRACRANIAL, PARENCHYMA

PLANES = ("TRA", "COR", "SAG")

Mask = npt.NDArray[np.bool_]


@dataclass
class FetalBrainStack:
    image: npt.NDArray[np.int16]  # (slices, rows, columns), 0-1000
    brain: Mask  # parenchyma: brain tissue and ventricles, no extra-axial CSF
    pixel_mm: float
    slice_mm: float
    plane: str
    intracranial: Mask  # the brain and the extra-axial CSF inside the skull

    @property
    def brain_volume_ml(self) -> float:
        return float(self.brain.sum() * self.pixel_mm**2 * self.slice_mm / 1000.0)

    def central(self, slices: int) -> FetalBrainStack:
        """The ``slices`` middle slices (all of them if fewer): a smaller stack of the same
        head, for quick runs; its brain may touch the first and last slices."""
        start = max(0, (len(self.image) - slices) // 2)
        part = slice(start, start + slices)
        return replace(
            self,
            image=self.image[part],
            brain=self.brain[part],
            intracranial=self.intracranial[part],
        )

    def truth(self, convention: str) -> Mask:
        """The brain mask under ``convention`` (``convention.CONVENTIONS``: the parenchyma
        alone, or the intracranial volume with the extra-axial CSF)."""
        if convention not in CONVENTIONS:
            raise ValueError(f"a phantom's truth is one of {CONVENTIONS}, not {convention!r}")
        return self.intracranial if convention == INTRACRANIAL else self.brain


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float
) -> npt.NDArray[np.float64]:
    field: npt.NDArray[np.float64] = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    field /= field.std() + 1e-9
    return field


def make_fetal_brain_stack(seed: int, plane: str | None = None) -> FetalBrainStack:
    rng = np.random.default_rng(seed)
    plane = plane or str(rng.choice(PLANES))
    slices = int(rng.integers(20, 61))
    rows = int(rng.choice([192, 224, 256, 288]))
    cols = rows + int(rng.choice([0, 0, 32]))
    pixel = float(rng.uniform(0.7, 1.4))
    slice_mm = float(rng.uniform(3.0, 4.5))

    r0 = rng.uniform(24.0, 44.0)  # brain half-width, mm (about 20-38 weeks)
    lr, ap, si = r0, r0 * rng.uniform(1.15, 1.3), r0 * rng.uniform(0.85, 0.95)
    a, b, c = {"TRA": (lr, ap, si), "COR": (lr, si, ap), "SAG": (ap, si, lr)}[plane]
    fov_x, fov_y = cols * pixel, rows * pixel
    cx = rng.uniform(-0.12, 0.12) * fov_x
    cy = rng.uniform(-0.12, 0.12) * fov_y
    z = (np.arange(slices) - (slices - 1) / 2) * slice_mm + rng.uniform(-0.15, 0.15) * c
    csf_mm, skull_mm, scalp_mm = rng.uniform(1.5, 4.0), rng.uniform(1.5, 3.0), rng.uniform(2.0, 4.0)
    fluid_scale = rng.uniform(1.4, 2.0)
    folding = [
        (int(k), rng.uniform(0.01, 0.035), rng.uniform(0, 2 * math.pi))
        for k in rng.integers(5, 14, 3)
    ]

    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    xx = (xx - cols / 2) * pixel
    yy = (yy - rows / 2) * pixel
    maternal = 0.35 + 0.08 * _smooth_field(rng, (rows, cols), 12 / pixel)
    bias = 1 + 0.18 * _smooth_field(rng, (rows, cols), 40 / pixel)
    body = (xx / (0.48 * fov_x)) ** 2 + (yy / (0.47 * fov_y)) ** 2 <= 1

    image = np.zeros((slices, rows, cols))
    brain = np.zeros((slices, rows, cols), dtype=bool)
    intracranial = np.zeros((slices, rows, cols), dtype=bool)
    drift = np.zeros(3)
    for k in range(slices):
        drift = drift * 0.8 + rng.normal(0, [1.2, 1.2, 1.5])
        if rng.random() < 0.08:
            drift += rng.normal(0, [5, 5, 6])  # a fetal jerk
        angle = math.radians(drift[2])
        dx, dy = xx - cx - drift[0], yy - cy - drift[1]
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        theta = np.arctan2(v / b, u / a)
        wobble = 1 + sum(amp * np.cos(freq * theta + phase) for freq, amp, phase in folding)
        zr = (z[k] / c) ** 2
        radius2 = ((u / a) ** 2 + (v / b) ** 2) / wobble**2 + zr
        shell = np.sqrt(np.clip(radius2, 0, None))

        def within(extra_mm: float, shell: npt.NDArray[np.float64] = shell) -> Mask:
            inside: Mask = shell <= 1 + extra_mm / r0
            return inside

        slab = maternal.copy()
        fluid = (
            (u / (a * fluid_scale)) ** 2 + (v / (b * fluid_scale * 1.1)) ** 2 + zr / fluid_scale**2
        ) <= 1
        slab[fluid] = 0.95
        slab[within(csf_mm + skull_mm + scalp_mm)] = 0.5
        slab[within(csf_mm + skull_mm)] = 0.08
        cranium = within(csf_mm)
        slab[cranium] = 0.92
        tissue = within(0.0)
        slab[tissue] = np.where(shell[tissue] > 0.9, 0.38, 0.52)  # cortex darker than WM
        ventricles = (
            ((np.abs(u) - 0.22 * a) / (0.12 * a)) ** 2 + (v / (0.45 * b)) ** 2 + zr * 4
        ) <= 1
        slab[tissue & ventricles] = 0.9
        slab[~body] = 0.02
        image[k] = slab * bias
        brain[k] = tissue
        intracranial[k] = cranium

    image = ndimage.gaussian_filter(image, (0, 0.6, 0.6))
    sigma = rng.uniform(0.015, 0.045)
    noisy = np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))
    scaled = np.clip(noisy * 1000 * rng.uniform(0.7, 1.0), 0, 4095).astype(np.int16)
    return FetalBrainStack(scaled, brain, pixel, slice_mm, plane, intracranial)


def write_nifti_pair(
    stack: FetalBrainStack, folder: Path, name: str, convention: str = PARENCHYMA
) -> tuple[Path, Path]:
    """``NAME_image.nii.gz`` and ``NAME_mask.nii.gz`` (the training layout), the mask the
    brain under ``convention`` (``FetalBrainStack.truth``; the parenchyma by default, the
    outline the default weights, 1.0.0, learnt)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([stack.pixel_mm, stack.pixel_mm, stack.slice_mm, 1.0])
    paths = (folder / f"{name}_image.nii.gz", folder / f"{name}_mask.nii.gz")
    mask = stack.truth(convention).astype(np.uint8)
    arrays: tuple[npt.NDArray[np.generic], ...] = (stack.image, mask)
    for path, array in zip(paths, arrays, strict=True):
        volume = np.ascontiguousarray(array.transpose(2, 1, 0))
        nib.save(nib.Nifti1Image(volume, affine), path)  # type: ignore[no-untyped-call]
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write fetal brain MRI phantoms as NIfTI pairs.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--convention", choices=CONVENTIONS, default=PARENCHYMA)
    args = parser.parse_args(argv)
    for seed in range(args.start, args.start + args.count):
        stack = make_fetal_brain_stack(seed)
        write_nifti_pair(stack, args.out, f"stack{seed:06d}", args.convention)
    return 0


def command(args: argparse.Namespace) -> None:
    """``medseg phantoms fetal-brain``: NIfTI image/mask pairs (masks under ``--convention``),
    or MR DICOM stacks with ``--dicom``."""
    for seed in range(args.start, args.start + args.count):
        stack = make_fetal_brain_stack(seed)
        if args.dicom:
            from worker.models.fetal_brain.mr_dicom import write_mr_stack

            write_mr_stack(stack, args.out / f"mr{seed:06d}_{stack.plane}")
        else:
            write_nifti_pair(stack, args.out, f"stack{seed:06d}", args.convention)


if __name__ == "__main__":
    raise SystemExit(main())
