"""The training layouts a reviewed case is written in, one per model family, each the layout
that model's own training reads:

* fetal head: HC18 (``KEY_HC.png``, ``KEY_HC_Annotation.png`` with the ellipse drawn as a
  two-pixel outline, ``training_set_pixel_size_and_HC.csv``) — worker.models.fetal_head.hc18;
  the subject key is the file name up to the first ``_``, as hc18_split groups subjects;
* fetal brain: ``KEY_NN_image.nii.gz`` / ``KEY_NN_mask.nii.gz`` —
  worker.models.fetal_brain.data.nifti_pairs;
* chest films: ``images/KEY_NN.png``, ``masks/KEY_NN.png`` and ``images.csv`` (image,
  patient_id = the subject key, projection) — worker.models.lung_cxr.films.read_films.

Every file holds pixels only: no DICOM header, no name, ID, date or UID.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from worker.export.seg_read import SegMasks
from worker.pipeline.loading import LoadedSeries
from worker.trainset.reviewed import Reference


class SkippedCaseError(Exception):
    """This case cannot be written in the layout; the message says why (no PHI)."""


def frame_keys(series: LoadedSeries) -> list[tuple[str, int]]:
    """(SOP Instance UID, 1-based frame number) of each of ``series.frames``."""
    count = int(series.frames.shape[0])
    if len(series.datasets) == count:
        return [(str(ds.SOPInstanceUID), 1) for ds in series.datasets]
    uid = str(series.datasets[0].SOPInstanceUID)
    order = series.frame_order if series.frame_order is not None else np.arange(count)
    return [(uid, int(i) + 1) for i in order]


def mask_stack(series: LoadedSeries, masks: SegMasks) -> npt.NDArray[np.bool_]:
    """The SEG's masks (all segments joined) on ``series.frames``, frame by frame."""
    stack = np.zeros(series.frames.shape, dtype=bool)
    for index, key in enumerate(frame_keys(series)):
        if key in masks.frames:
            stack[index] = masks.union(key)
    return stack


class Layout(Protocol):
    name: str

    def add(
        self, series: LoadedSeries, masks: SegMasks, subject: str, reference: Reference
    ) -> list[str]: ...

    def finish(self) -> list[str]: ...


def _counted(counts: dict[str, int], subject: str) -> int:
    counts[subject] = counts.get(subject, 0) + 1
    return counts[subject]


@dataclass
class HC18Layout:
    out: Path
    name: str = "hc18"
    rows: list[tuple[str, float, float]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(
        self, series: LoadedSeries, masks: SegMasks, subject: str, reference: Reference
    ) -> list[str]:
        from worker.models.fetal_head.biometry import Ellipse, fit_ellipse_mm
        from worker.models.fetal_head.images import as_uint8
        from worker.pipeline.calibration import image_calibration

        hc = reference.measurements.get("head_circumference_mm")
        calibration = image_calibration(series.datasets[0])
        if hc is None or calibration is None:
            raise SkippedCaseError("no head circumference in mm (uncalibrated image)")
        if abs(calibration.row_mm - calibration.column_mm) > 1e-3 * calibration.row_mm:
            raise SkippedCaseError("pixels not square: HC18 has one pixel size per image")
        ellipse: Ellipse | None
        if reference.ellipse is not None:
            # The reviewer's own ellipse (mm from the top-left pixel centre), in pixels, on
            # the frame the measurements were taken on.
            frame = int(reference.measurements.get("measured_frame", 1)) - 1
            best = min(max(frame, 0), int(series.frames.shape[0]) - 1)
            cx, cy, a, b, angle = reference.ellipse
            pixel = calibration.row_mm
            ellipse = Ellipse(cx / calibration.column_mm, cy / pixel, a / pixel, b / pixel, angle)
        else:
            stack = mask_stack(series, masks)
            areas = stack.sum(axis=(1, 2))
            if not areas.any():
                raise SkippedCaseError("the SEG has no head on this series' frames")
            best = int(np.argmax(areas))
            ellipse = fit_ellipse_mm(stack[best], (1.0, 1.0))
        if ellipse is None:
            raise SkippedCaseError("no ellipse in the head mask")
        image = as_uint8(series.frames[best : best + 1])[0]
        # HC18 draws the ellipse as a line about two pixels wide centred on it (hc18.load_mask).
        annotation = np.zeros(image.shape, dtype=np.uint8)
        scale = 16  # cv2 fixed point: 4 fractional bits
        cv2.ellipse(
            annotation,
            (round(ellipse.cx * scale), round(ellipse.cy * scale)),
            (round(ellipse.a * scale), round(ellipse.b * scale)),
            ellipse.angle_deg,
            0,
            360,
            255,
            thickness=2,
            shift=4,
        )
        n = _counted(self.counts, subject)
        stem = f"{subject}_HC" if n == 1 else f"{subject}_{n}HC"
        cv2.imwrite(str(self.out / f"{stem}.png"), image)
        cv2.imwrite(str(self.out / f"{stem}_Annotation.png"), annotation)
        self.rows.append((f"{stem}.png", calibration.row_mm, hc))
        return [f"{stem}.png", f"{stem}_Annotation.png"]

    def finish(self) -> list[str]:
        from worker.models.fetal_head.hc18 import CSV_NAMES

        with open(self.out / CSV_NAMES[0], "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["filename", "pixel size(mm)", "head circumference (mm)"])
            for name, pixel_mm, hc in self.rows:
                writer.writerow([name, f"{pixel_mm:.9f}", f"{hc:.2f}"])
        return [CSV_NAMES[0]]


@dataclass
class NiftiLayout:
    out: Path
    name: str = "nifti-pairs"
    counts: dict[str, int] = field(default_factory=dict)

    def add(
        self, series: LoadedSeries, masks: SegMasks, subject: str, reference: Reference
    ) -> list[str]:
        import nibabel as nib

        geometry = series.geometry
        if geometry is None or len(geometry.positions) < 2:
            raise SkippedCaseError("no volume geometry")
        stack = mask_stack(series, masks)
        row_mm, col_mm = geometry.pixel_spacing
        positions = np.asarray(geometry.positions, dtype=np.float64)
        slice_mm = float(np.median(np.linalg.norm(np.diff(positions, axis=0), axis=1)))
        # As the fetal brain phantoms are written: (columns, rows, slices), zooms to match.
        affine = np.diag([col_mm, row_mm, slice_mm, 1.0])
        stem = f"{subject}_{_counted(self.counts, subject):02d}"
        arrays: Sequence[npt.NDArray[Any]] = (
            np.rint(series.frames).astype(np.int16),
            stack.astype(np.uint8),
        )
        names = [f"{stem}_image.nii.gz", f"{stem}_mask.nii.gz"]
        for name, array in zip(names, arrays, strict=True):
            volume = np.ascontiguousarray(array.transpose(2, 1, 0))
            nib.save(nib.Nifti1Image(volume, affine), self.out / name)  # type: ignore[no-untyped-call]
        return names

    def finish(self) -> list[str]:
        return []


@dataclass
class ChestFilmLayout:
    out: Path
    name: str = "images-masks"
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(
        self, series: LoadedSeries, masks: SegMasks, subject: str, reference: Reference
    ) -> list[str]:
        from worker.models.lung_cxr.preprocess import display_uint8

        if series.frames.shape[0] != 1:
            raise SkippedCaseError("a chest film is one frame")
        stack = mask_stack(series, masks)
        dataset = series.datasets[0]
        image = display_uint8(
            series.frames[0], monochrome1=dataset.get("PhotometricInterpretation") == "MONOCHROME1"
        )
        (self.out / "images").mkdir(exist_ok=True)
        (self.out / "masks").mkdir(exist_ok=True)
        name = f"{subject}_{_counted(self.counts, subject):02d}.png"
        cv2.imwrite(str(self.out / "images" / name), image)
        cv2.imwrite(str(self.out / "masks" / name), stack[0].astype(np.uint8) * 255)
        projection = str(dataset.get("ViewPosition", "") or "").strip().lower()
        self.rows.append((name, subject, projection if projection in ("pa", "ap") else ""))
        return [f"images/{name}", f"masks/{name}"]

    def finish(self) -> list[str]:
        with open(self.out / "images.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "patient_id", "projection"])
            writer.writerows(self.rows)
        return ["images.csv"]


#: Model name -> its layout; the ``medseg train`` names are accepted too.
LAYOUTS: dict[str, type[HC18Layout] | type[NiftiLayout] | type[ChestFilmLayout]] = {
    "fetal-head-unet": HC18Layout,
    "fetal-brain-unet": NiftiLayout,
    "lung-cxr": ChestFilmLayout,
}
ALIASES = {"fetal-head": "fetal-head-unet", "fetal-brain": "fetal-brain-unet"}
