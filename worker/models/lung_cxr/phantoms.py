"""A frontal (PA) chest radiograph phantom with exact lung-field masks and opacity boxes.

Drawn in attenuation space (bright = dense, as displayed in MONOCHROME2): body and arms,
two lobed lung fields, mediastinum and heart, spine, ribs, clavicles, diaphragm domes,
optional patchy pneumonia opacities inside a lung (with their bounding boxes), blur, noise and
varied exposure. Lung fields follow the JSRT/Montgomery convention: the heart shadow is not
lung. Image left is the patient's right (PatientOrientation L\\F).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive


@dataclass
class ChestXray:
    image: npt.NDArray[np.uint8]  # (rows, columns), bright = dense
    right_lung: Mask  # patient's right: image left
    left_lung: Mask
    pixel_mm: float
    boxes: list[Box] = field(default_factory=list)  # pneumonia opacities
    # The fields in the convention of the real training masks (cxr-lungs): the lung behind
    # the heart included. ``right_lung``/``left_lung`` exclude it (JSRT/Montgomery).
    right_field: Mask | None = None
    left_field: Mask | None = None

    @property
    def lungs(self) -> Mask:
        both: Mask = self.right_lung | self.left_lung
        return both

    @property
    def fields(self) -> Mask:
        """Both projected fields, the lung behind the heart included."""
        right = self.right_lung if self.right_field is None else self.right_field
        left = self.left_lung if self.left_field is None else self.left_field
        both: Mask = right | left
        return both


def _lobed(
    xx: npt.NDArray[np.float64],
    yy: npt.NDArray[np.float64],
    centre: tuple[float, float],
    radii: tuple[float, float],
    rng: np.random.Generator,
) -> Mask:
    """An ellipse whose radius wobbles with a few low harmonics (a lobed outline)."""
    dx, dy = (xx - centre[0]) / radii[0], (yy - centre[1]) / radii[1]
    theta = np.arctan2(dy, dx)
    wobble = np.ones_like(theta)
    for harmonic in (2, 3, 4):
        wobble += rng.uniform(0.0, 0.05) * np.sin(harmonic * theta + rng.uniform(0, 2 * np.pi))
    inside: Mask = np.hypot(dx, dy) <= wobble
    return inside


def _band(
    xx: npt.NDArray[np.float64],
    yy: npt.NDArray[np.float64],
    curve: npt.NDArray[np.float64],
    half_width: float,
) -> npt.NDArray[np.float64]:
    """A soft band of ``half_width`` pixels around the curve y = curve(x)."""
    d = np.abs(yy - curve) / max(half_width, 1e-6)
    band: npt.NDArray[np.float64] = np.clip(1.0 - d**2, 0.0, 1.0)
    return band


#: Farthest a lung field reaches from the midline (fraction of the width): at least 4 % of
#: the width of chest wall between a lung and the film's edge.
LATERAL_LIMIT = 0.42


def make_chest_xray(
    seed: int,
    *,
    size: int | None = None,
    opacities: int | None = None,
) -> ChestXray:
    """One phantom; ``size`` (columns) and the number of ``opacities`` vary with the seed
    unless given. About a third of the seeds have one or two opacities."""
    rng = np.random.default_rng(seed)
    cols = size or int(rng.integers(224, 385))
    rows = round(cols * rng.uniform(0.95, 1.15))
    field_mm = rng.uniform(380, 430)
    pixel_mm = field_mm / cols
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    xx, yy = x / cols, y / rows  # normalised coordinates

    mid = 0.5 + rng.uniform(-0.04, 0.04)
    top = rng.uniform(0.10, 0.18)  # lung apices
    base = rng.uniform(0.68, 0.80)  # costophrenic angles
    half_w = rng.uniform(0.17, 0.22)  # lung half width
    gap = rng.uniform(0.05, 0.08)  # half width of the mediastinum

    density = np.zeros((rows, cols))
    body = ((xx - mid) / rng.uniform(0.44, 0.5)) ** 2 + ((yy - 0.6) / 0.75) ** 4 <= 1
    density[body] = 0.55
    for side in (-1, 1):  # upper arms at the edges
        arm = ((xx - mid - side * 0.47) / 0.06) ** 2 + ((yy - 0.35) / 0.4) ** 2 <= 1
        density[arm] = np.maximum(density[arm], 0.62)

    lungs: list[Mask] = []
    height = base - top
    for side in (-1, 1):  # -1: image left = patient's right
        cx = mid + side * (gap + half_w)
        shape = _lobed(xx, yy, (cx, top + 0.55 * height), (half_w, 0.58 * height), rng)
        medial = side * (xx - mid) >= gap + rng.uniform(-0.01, 0.01)
        # The chest wall: a lung field ends inside the film, as on a real chest film.
        lateral = side * (xx - mid) <= LATERAL_LIMIT
        shape &= medial & lateral & (yy >= top)
        lungs.append(shape)

    # Diaphragm domes: the right one higher; the lung ends above its dome.
    for i, side in enumerate((-1, 1)):
        cx = mid + side * (gap + half_w)
        peak = base - (rng.uniform(0.08, 0.12) if side == -1 else rng.uniform(0.05, 0.09))
        dome = peak + (base + 0.02 - peak) * ((xx - cx) / (half_w * 1.1)) ** 2
        lungs[i] &= yy < dome
        below = (yy >= dome) & body & (side * (xx - mid) >= 0)
        density[below] = np.maximum(density[below], 0.75)

    # Heart: an ellipse left of the midline, over the medial lower left lung.
    heart_c = (mid + rng.uniform(0.04, 0.08), base - rng.uniform(0.14, 0.2))
    heart_r = (rng.uniform(0.13, 0.17), rng.uniform(0.11, 0.14))
    heart = ((xx - heart_c[0]) / heart_r[0]) ** 2 + ((yy - heart_c[1]) / heart_r[1]) ** 2 <= 1
    behind_heart = [lung.copy() for lung in lungs]
    lungs[1] &= ~heart
    lungs[0] &= ~heart
    mediastinum = (np.abs(xx - mid) < gap) & (yy > top - 0.05) & body
    density[mediastinum | heart] = 0.8

    lung_field = lungs[0] | lungs[1]
    density[lung_field] = 0.18 + rng.uniform(-0.03, 0.03)
    spine = np.abs(xx - mid) < gap * 0.45
    density[spine & body] += 0.12

    # Ribs: curved bands descending laterally; clavicles near the top.
    ribs = np.zeros_like(density)
    spacing = height / rng.uniform(8.5, 10.5)
    for k in range(12):
        for side in (-1, 1):
            y0 = top - 0.02 + k * spacing
            curve = y0 + rng.uniform(0.5, 0.8) * (xx - mid) ** 2
            band = _band(xx, yy, curve, spacing * 0.22) * (side * (xx - mid) > gap * 0.4)
            band *= np.clip((base + 0.04 - yy) / 0.06, 0.3, 1.0)
            ribs = np.maximum(ribs, band)
    for side in (-1, 1):
        curve = top - 0.01 + 0.25 * (side * (xx - mid) - 0.18) ** 2
        clav = _band(xx, yy, curve, 0.012) * (np.abs(side * (xx - mid) - 0.2) < 0.16)
        ribs = np.maximum(ribs, (side * (xx - mid) > 0) * clav * 1.4)
    density += 0.22 * ribs * body

    # Vascular markings: faint smooth texture inside the lungs.
    texture = cv2.GaussianBlur(rng.normal(0, 1, (rows, cols)), (0, 0), 2.0 + cols / 200)
    density += 0.05 * texture / max(np.abs(texture).max(), 1e-6) * lung_field

    boxes: list[Box] = []
    count = opacities if opacities is not None else int(rng.choice([0, 0, 0, 0, 1, 1, 2]))
    lung_sizes = [int(m.sum()) for m in lungs]
    for _ in range(count):
        side_index = int(rng.integers(0, 2)) if min(lung_sizes) > 0 else int(np.argmax(lung_sizes))
        ys, xs = np.nonzero(lungs[side_index])
        if len(ys) == 0:
            break
        pick = int(rng.integers(0, len(ys)))
        cy, cx = float(ys[pick]), float(xs[pick])
        extent = cols * rng.uniform(0.05, 0.09)
        blob = np.zeros_like(density)
        for _ in range(int(rng.integers(3, 7))):
            by = cy + rng.normal(0, extent * 0.5)
            bx = cx + rng.normal(0, extent * 0.5)
            r = extent * rng.uniform(0.35, 0.7)
            blob = np.maximum(blob, np.exp(-(((x - bx) ** 2 + (y - by) ** 2) / (2 * r**2))))
        patchy = blob * (0.75 + 0.25 * texture / max(np.abs(texture).max(), 1e-6))
        patchy *= lungs[side_index]
        region = patchy > 0.35
        if region.sum() < 30:
            continue
        density += rng.uniform(0.4, 0.6) * patchy
        ry, rx = np.nonzero(region)
        boxes.append((int(rx.min()), int(ry.min()), int(rx.max()) + 1, int(ry.max()) + 1))

    # Exposure, contrast, blur and quantum noise.
    density = np.asarray(cv2.GaussianBlur(density, (0, 0), 0.6 + cols / 400), np.float64)
    gamma = rng.uniform(0.7, 1.4)
    signal = np.clip(density, 0, 1.2) / 1.2
    signal = signal**gamma * rng.uniform(0.75, 1.0) + rng.uniform(0.0, 0.12)
    signal += rng.normal(0, rng.uniform(0.01, 0.035), signal.shape)
    image = np.clip(signal * 255, 0, 255).astype(np.uint8)
    return ChestXray(
        image=image,
        right_lung=lungs[0],
        left_lung=lungs[1],
        pixel_mm=pixel_mm,
        boxes=boxes,
        right_field=behind_heart[0],
        left_field=behind_heart[1],
    )


def command(args: argparse.Namespace) -> None:
    """``medseg phantoms chest-xray``: CR DICOMs (PixelSpacing), a third of them with one
    pneumonia opacity."""
    from worker.models.lung_cxr.cr_dicom import write_cxr

    for seed in range(args.start, args.start + args.count):
        phantom = make_chest_xray(seed, opacities=int(seed % 3 == 0))
        write_cxr(phantom, args.out / f"cxr{seed:06d}.dcm")
