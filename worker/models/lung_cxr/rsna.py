"""The RSNA Pneumonia Detection Challenge layout: a CSV of boxes and one DICOM per patient.

``DIR/stage_2_train_labels.csv`` (columns patientId,x,y,width,height,Target; one row per box,
``Target`` 0 with empty coordinates for a patient without opacity) and the images as
``DIR/stage_2_train_images/<patientId>.dcm`` (or ``DIR/images/`` or ``DIR/`` itself). Any
other ``*labels*.csv`` in DIR is read when the stage 2 name is absent.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from worker.models.lung_cxr.cr_dicom import write_cxr
from worker.models.lung_cxr.phantoms import make_chest_xray

LABELS = "stage_2_train_labels.csv"
IMAGE_DIRS = ("stage_2_train_images", "images", ".")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class RsnaItem:
    patient_id: str
    image: Path
    boxes: tuple[Box, ...]  # x0, y0, x1, y1 in image pixels


def _labels_file(folder: Path) -> Path:
    if (folder / LABELS).exists():
        return folder / LABELS
    found = sorted(folder.glob("*labels*.csv"))
    if not found:
        raise ValueError(f"{folder}: no {LABELS} (or *labels*.csv)")
    return found[0]


def read_rsna(folder: Path) -> list[RsnaItem]:
    boxes: dict[str, list[Box]] = defaultdict(list)
    with open(_labels_file(folder), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"patientId", "x", "y", "width", "height", "Target"} - set(
            reader.fieldnames or []
        )
        if missing:
            raise ValueError(f"labels CSV lacks columns {sorted(missing)}")
        for row in reader:
            pid = row["patientId"].strip()
            boxes.setdefault(pid, [])
            if row["Target"].strip() == "1":
                x, y = float(row["x"]), float(row["y"])
                w, h = float(row["width"]), float(row["height"])
                boxes[pid].append((x, y, x + w, y + h))
    items = []
    for pid, pid_boxes in boxes.items():
        image = next(
            (folder / d / f"{pid}.dcm" for d in IMAGE_DIRS if (folder / d / f"{pid}.dcm").exists()),
            None,
        )
        if image is None:
            raise ValueError(f"{folder}: no DICOM for patientId {pid}")
        items.append(RsnaItem(pid, image, tuple(pid_boxes)))
    if not items:
        raise ValueError(f"{folder}: the labels CSV has no rows")
    return items


def write_rsna_layout(folder: Path, seeds: Iterable[int]) -> list[str]:
    """Phantom radiographs in the RSNA layout (DICOM + CSV); returns the patient ids."""
    images = folder / "stage_2_train_images"
    images.mkdir(parents=True, exist_ok=True)
    ids = []
    with open(folder / LABELS, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patientId", "x", "y", "width", "height", "Target"])
        for seed in seeds:
            phantom = make_chest_xray(seed, opacities=int(seed % 3 != 0))
            pid = f"phantom-{seed:06d}"
            write_cxr(phantom, images / f"{pid}.dcm", patient_id=pid)
            for x0, y0, x1, y1 in phantom.boxes:
                writer.writerow([pid, x0, y0, x1 - x0, y1 - y0, 1])
            if not phantom.boxes:
                writer.writerow([pid, "", "", "", "", 0])
            ids.append(pid)
    return ids
