"""HC18-like fetal head ultrasound phantoms with exact ground truth.

Each frame has a fan-shaped sector, speckle (multiplicative Rayleigh, log-compressed), amniotic
fluid around the head, a skull echo as a bright elliptical ring of varying thickness whose
brightness depends on its angle to the beam (with partial dropout), acoustic shadowing behind
the skull, inner brain structures (midline echo, choroid plexus, cavum septi pellucidi),
burned-in text, calipers and a depth ruler. Pixel size 0.05-0.33 mm and HC 50-350 mm, as in
HC18. The truth ellipse lies on the OUTER border of the skull echo.

Only numpy and OpenCV here, so training machines need neither pydicom nor the service.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from worker.models.fetal_head.biometry import ellipse_mask, ramanujan_perimeter

HC18_SHAPE = (540, 800)  # rows, columns
PIXEL_MM_RANGE = (0.05, 0.33)
HC_MM_RANGE = (50.0, 350.0)

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FetalHeadTruth:
    """Ground truth in pixels of the frame: outer skull ellipse and the calibration."""

    cx: float
    cy: float
    a: float  # semi-major axis, pixels
    b: float  # semi-minor axis, pixels
    angle_deg: float
    pixel_mm: float

    @property
    def hc_mm(self) -> float:
        return ramanujan_perimeter(self.a, self.b) * self.pixel_mm

    @property
    def bpd_mm(self) -> float:
        return 2 * self.b * self.pixel_mm

    @property
    def ofd_mm(self) -> float:
        return 2 * self.a * self.pixel_mm

    def mask(self, shape: tuple[int, int] = HC18_SHAPE) -> npt.NDArray[np.bool_]:
        return ellipse_mask(shape, (self.cx, self.cy, self.a, self.b, self.angle_deg))


@dataclass
class FetalHeadFrame:
    image: Image  # (rows, columns) uint8 greyscale
    truth: FetalHeadTruth


def _sample_geometry(rng: np.random.Generator, shape: tuple[int, int]) -> FetalHeadTruth:
    rows, cols = shape
    while True:
        a = rng.uniform(0.2, 0.4) * cols
        b = a * rng.uniform(0.72, 0.9)
        hc = rng.uniform(*HC_MM_RANGE)
        pixel = hc / ramanujan_perimeter(a, b)
        if not PIXEL_MM_RANGE[0] <= pixel <= PIXEL_MM_RANGE[1]:
            continue
        angle = rng.uniform(0, 180)
        t = math.radians(angle)
        half_w = math.sqrt((a * math.cos(t)) ** 2 + (b * math.sin(t)) ** 2)
        half_h = math.sqrt((a * math.sin(t)) ** 2 + (b * math.cos(t)) ** 2)
        margin = 12
        if half_w * 2 + 2 * margin > cols * 0.9 or half_h * 2 + 2 * margin > rows * 0.88:
            continue
        cx = rng.uniform(
            cols * 0.5 - (cols * 0.45 - half_w - margin),
            cols * 0.5 + (cols * 0.45 - half_w - margin),
        )
        top = rows * 0.1 + half_h + margin
        bottom = rows - half_h - margin
        cy = rng.uniform(top, bottom) if bottom > top else (top + bottom) / 2
        return FetalHeadTruth(cx, cy, a, b, angle, pixel)


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float
) -> npt.NDArray[np.float32]:
    noise = rng.standard_normal(shape).astype(np.float32)
    blurred = np.asarray(cv2.GaussianBlur(noise, (0, 0), sigma), dtype=np.float32)
    blurred /= blurred.std() + 1e-6
    return blurred


def _fan(
    shape: tuple[int, int], rng: np.random.Generator
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
    """Sector mask and the depth (distance from the probe apex) of every pixel."""
    rows, cols = shape
    apex_x = cols / 2 + rng.uniform(-10, 10)
    apex_y = -rng.uniform(40, 120)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    depth = np.hypot(xx - apex_x, yy - apex_y)
    theta = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    half_angle = rng.uniform(36, 48)
    r0 = -apex_y + rng.uniform(5, 25)
    r1 = rows - apex_y - rng.uniform(0, 15)
    mask = (np.abs(theta) <= half_angle) & (depth >= r0) & (depth <= r1)
    return mask, depth


def _draw_ring_and_brain(
    echo: npt.NDArray[np.float32], truth: FetalHeadTruth, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Draw the skull ring and brain into ``echo``; returns the skull-echo map (for shadows)."""
    rows, cols = echo.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    t = math.radians(truth.angle_deg)
    dx, dy = xx - truth.cx, yy - truth.cy
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    radius = np.sqrt((u / truth.a) ** 2 + (v / truth.b) ** 2)
    phi = np.arctan2(v / truth.b, u / truth.a)

    thickness_mm = rng.uniform(0.8, 1.6) + truth.hc_mm / 350.0 * rng.uniform(1.0, 2.5)
    thickness = float(np.clip(thickness_mm / truth.pixel_mm, 4, 28))
    # Thickness varies around the head (thicker at the occiput and frontal bone).
    local_t = thickness * (1 + 0.3 * np.cos(2 * phi + rng.uniform(0, math.pi)))
    inner = 1 - local_t / truth.b
    brain = radius < inner
    ring = (radius <= 1.0) & ~brain

    # Brain parenchyma and structures.
    echo[brain] = rng.uniform(0.05, 0.14)
    mid_v = np.abs(v) < max(1.5, 0.012 * truth.b)
    echo[brain & mid_v & (np.abs(u) < 0.85 * truth.a)] = rng.uniform(0.45, 0.7)
    for side in (-1, 1):
        cu, cv_ = rng.uniform(-0.3, 0.1) * truth.a, side * 0.28 * truth.b
        plexus = ((u - cu) / (0.22 * truth.a)) ** 2 + ((v - cv_) / (0.09 * truth.b)) ** 2 <= 1
        echo[brain & plexus] = rng.uniform(0.35, 0.6)
    csp = (np.abs(u - 0.3 * truth.a) < 0.07 * truth.a) & (np.abs(v) < 0.06 * truth.b)
    echo[brain & csp] = 0.04

    # Skull brightness: strong where the bone faces the beam (top/bottom), weak at the sides.
    normal_angle = np.arctan2(np.sin(phi) / truth.b, np.cos(phi) / truth.a) + t
    facing = np.abs(np.sin(normal_angle))  # beam is roughly vertical
    bright = rng.uniform(0.3, 0.5) + rng.uniform(0.7, 1.3) * facing ** rng.uniform(0.6, 1.6)
    for _ in range(rng.integers(0, 4)):
        centre = rng.uniform(-math.pi, math.pi)
        width = rng.uniform(0.08, 0.35)
        gap = np.abs(np.angle(np.exp(1j * (phi - centre)))) < width
        bright = np.where(gap, bright * rng.uniform(0.15, 0.45), bright)
    # Intensity across the bone: brightest at the outer table.
    profile = np.clip((radius - inner) / np.maximum(1 - inner, 1e-3), 0, 1) ** 0.6
    skull = np.where(ring, bright * (0.55 + 0.45 * profile) * rng.uniform(0.8, 1.0), 0).astype(
        np.float32
    )
    echo[ring] = np.maximum(echo[ring], skull[ring])
    return skull


def _shadow(skull: npt.NDArray[np.float32], strength: float) -> npt.NDArray[np.float32]:
    """Transmission behind the skull along (approximately vertical) beam lines."""
    absorbed = np.cumsum(skull, axis=0) * strength
    transmission: npt.NDArray[np.float32] = np.exp(-absorbed).astype(np.float32)
    return np.asarray(cv2.GaussianBlur(transmission, (0, 0), 3), dtype=np.float32)


def _annotate(image: Image, truth: FetalHeadTruth, rng: np.random.Generator) -> None:
    rows, cols = image.shape
    font = cv2.FONT_HERSHEY_SIMPLEX
    lines = [
        f"{rng.integers(10, 40)}.{rng.integers(0, 9)} cm/s",
        f"MI {rng.uniform(0.5, 1.4):.1f}  TIs {rng.uniform(0.1, 0.9):.1f}",
        f"{rng.choice(['C1-5', 'C2-9', 'AB2-7', 'RAB6'])}  OB",
        f"G {rng.integers(30, 70)}  DR {rng.integers(50, 80)}",
    ]
    for i, text in enumerate(lines[: rng.integers(2, 5)]):
        cv2.putText(
            image, text, (8, 22 + 20 * i), font, 0.5, int(rng.integers(180, 256)), 1, cv2.LINE_AA
        )
    if rng.random() < 0.7:
        cv2.putText(
            image,
            f"GA {rng.integers(12, 40)}w{rng.integers(0, 7)}d",
            (cols - 150, 24),
            font,
            0.55,
            230,
            1,
            cv2.LINE_AA,
        )
    # Depth ruler.
    x = cols - 14
    for k, y in enumerate(range(40, rows - 10, int(rng.integers(28, 60)))):
        cv2.line(image, (x, y), (x + (8 if k % 2 == 0 else 4), y), 200, 1)
    # Calipers: '+' marks, sometimes at the BPD ends as a sonographer places them.
    marks = int(rng.integers(0, 5))
    t = math.radians(truth.angle_deg)
    for m in range(marks):
        if m < 2 and rng.random() < 0.6:
            sign = 1 if m == 0 else -1
            px = truth.cx - sign * truth.b * math.sin(t)
            py = truth.cy + sign * truth.b * math.cos(t)
        else:
            px, py = rng.uniform(40, cols - 40), rng.uniform(60, rows - 20)
        size = int(rng.integers(5, 10))
        cv2.drawMarker(image, (int(px), int(py)), 255, cv2.MARKER_CROSS, size * 2, 1)


def make_fetal_head_frame(
    seed: int, shape: tuple[int, int] = HC18_SHAPE, truth: FetalHeadTruth | None = None
) -> FetalHeadFrame:
    """One greyscale frame (uint8) and its exact truth; deterministic for a seed.

    ``truth`` pins the head geometry (cine frames of one head); the seed still draws it, so
    the other draws do not depend on whether it is given.
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    sampled = _sample_geometry(rng, shape)
    truth = truth or sampled

    echo = rng.uniform(0.15, 0.35) + 0.07 * _smooth_noise(rng, shape, rng.uniform(15, 40))
    yy = np.mgrid[0:rows, 0:cols][0].astype(np.float32)
    echo += 0.12 * np.exp(
        -(((yy - rng.uniform(20, 90)) / rng.uniform(8, 25)) ** 2)
    )  # maternal wall
    echo = echo.astype(np.float32)
    # Amniotic fluid around the head.
    fluid = ellipse_mask(
        shape,
        (
            truth.cx + rng.uniform(-20, 20),
            truth.cy + rng.uniform(-20, 20),
            truth.a * rng.uniform(1.1, 1.5),
            truth.b * rng.uniform(1.15, 1.6),
            truth.angle_deg + rng.uniform(-25, 25),
        ),
    )
    echo[fluid] = rng.uniform(0.02, 0.08)
    skull = _draw_ring_and_brain(echo, truth, rng)
    echo *= _shadow(skull, rng.uniform(0.015, 0.06))

    fan, depth = _fan(shape, rng)
    echo *= np.exp(-depth / rng.uniform(900, 2500)).astype(np.float32)  # attenuation with depth

    speckle = rng.rayleigh(1.0, size=shape).astype(np.float32)
    speckle = cv2.GaussianBlur(  # type: ignore[assignment]
        speckle, (0, 0), sigmaX=rng.uniform(1.2, 2.5), sigmaY=rng.uniform(0.6, 1.2)
    )
    speckle /= speckle.mean()
    intensity = np.clip(echo, 0, None) * speckle
    gain = rng.uniform(3, 10)
    compressed = np.log1p(gain * intensity) / np.log1p(gain * 1.6)
    compressed = cv2.GaussianBlur(compressed.astype(np.float32), (0, 0), 0.7)
    image = np.clip(compressed * 255 * rng.uniform(0.85, 1.1), 0, 255).astype(np.uint8)
    image[~fan] = 0
    _annotate(image, truth, rng)
    return FetalHeadFrame(image=image, truth=truth)


def annotation_outline(truth: FetalHeadTruth, shape: tuple[int, int] = HC18_SHAPE) -> Image:
    """An HC18-style annotation: the truth ellipse drawn as a thin outline."""
    outline = np.zeros(shape, dtype=np.uint8)
    centre = (round(truth.cx * 16), round(truth.cy * 16))
    axes = (round(truth.a * 16), round(truth.b * 16))
    cv2.ellipse(outline, centre, axes, truth.angle_deg, 0, 360, 255, 2, cv2.LINE_8, shift=4)
    return outline


CSV_NAME = "training_set_pixel_size_and_HC.csv"


def write_hc18_layout(folder: Path, seeds: range | list[int]) -> None:
    """Write ``NNN_HC.png``, ``NNN_HC_Annotation.png`` and the CSV, as in the HC18 set."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [_write_one((folder, seed)) for seed in seeds]
    with open(folder / CSV_NAME, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "pixel size(mm)", "head circumference (mm)"])
        writer.writerows(rows)


def _write_one(args: tuple[Path, int]) -> list[str]:
    folder, seed = args
    frame = make_fetal_head_frame(seed)
    name = f"{seed:03d}_HC.png"
    cv2.imwrite(str(folder / name), frame.image)
    cv2.imwrite(str(folder / f"{seed:03d}_HC_Annotation.png"), annotation_outline(frame.truth))
    return [name, f"{frame.truth.pixel_mm:.9f}", f"{frame.truth.hc_mm:.2f}"]


def write_hc18_parallel(folder: Path, seeds: range, workers: int) -> None:
    """As write_hc18_layout, over ``workers`` processes (for training sets of thousands)."""
    from multiprocessing import Pool

    folder.mkdir(parents=True, exist_ok=True)
    with Pool(workers) as pool:
        rows = pool.map(_write_one, [(folder, s) for s in seeds], chunksize=16)
    with open(folder / CSV_NAME, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "pixel size(mm)", "head circumference (mm)"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write fetal head phantoms in the HC18 layout.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    write_hc18_parallel(args.out, range(args.start, args.start + args.count), args.workers)
    return 0


def command(args: argparse.Namespace) -> None:
    """``medseg phantoms fetal-head``: HC18-layout PNGs, or US DICOMs with ``--dicom``."""
    if args.dicom:
        from worker.models.fetal_head.us_dicom import write_us_phantom

        for seed in range(args.start, args.start + args.count):
            write_us_phantom(
                args.out / f"us{seed:05d}.dcm",
                seed,
                frames=args.frames,
                rgb=args.dicom == "rgb",
                calibrated=not args.uncalibrated,
            )
    else:
        write_hc18_parallel(
            args.out, range(args.start, args.start + args.count), os.cpu_count() or 1
        )


if __name__ == "__main__":
    raise SystemExit(main())
