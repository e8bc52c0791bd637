"""Classical lung CT segmentation: HU threshold, connected components, airway removal.

The reference and fallback for the lung CT U-Net. Left and right lungs are
separated (by erosion when they touch) and named from patient coordinates (LPS: +x is the
patient's left), never from image columns.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.core.errors import InputError
from worker.core.registry import ModelSpec
from worker.core.tags import SeriesTags
from worker.export.outputs import (
    LEFT_LUNG,
    RIGHT_LUNG,
    VOLUME,
    MeasurementValue,
    ModelOutput,
    Segment,
)
from worker.models.lung_ct_threshold import gate
from worker.models.lung_ct_threshold.card import CARD
from worker.models.lung_ct_threshold.volume_ops import (
    IN_PLANE,
    Box,
    bounding_box,
    close_and_fill_in_plane,
    label_sizes,
    mean_index,
    slice_counts,
)
from worker.pipeline.loading import LoadedSeries, VolumeGeometry

logger = logging.getLogger(__name__)

AIR_THRESHOLD_HU = -320.0
AIRWAY_MAX_AREA_MM2 = 600.0  # trachea / main bronchi cross sections are well below 6 cm²
AIRWAY_MAX_OFFSET = 0.12  # ... and lie within this fraction of the body width of its centre
MIN_LUNG_ML = 50.0
MAX_SPLIT_EROSIONS = 12
FILL_CLOSINGS = 2  # in-plane closings before the holes (vessels) are filled

_CHEST_WORDS = ("CHEST", "LUNG", "THORAX", "THX", "TORAX", "THORAC")

Mask = npt.NDArray[np.bool_]


def accepts(tags: SeriesTags) -> bool:
    if tags.modality != "CT":
        return False
    text = f"{tags.body_part_examined} {tags.series_description}"
    return any(word in text for word in _CHEST_WORDS)


def _outside_air(air: Mask) -> Mask:
    """Air connected, within its slice, to the image border (room air, table gaps)."""
    labels, _ = ndimage.label(air, structure=IN_PLANE)
    border = np.concatenate(
        [labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]], axis=1
    )
    border_labels = np.unique(border[border > 0])
    return np.isin(labels, border_labels)


def _body_centre_and_width(body: Mask) -> tuple[float, float]:
    columns = np.nonzero(body.any(axis=(0, 1)))[0]
    if columns.size == 0:
        raise InputError("no body found in the CT series")
    return float(columns.mean()), float(columns.max() - columns.min() + 1)


def _remove_airways(candidates: Mask, body: Mask, pixel_area_mm2: float) -> Mask:
    """Drop small, central in-plane components: trachea and main bronchi."""
    centre, width = _body_centre_and_width(body)
    labels, count = ndimage.label(candidates, structure=IN_PLANE)
    if count == 0:
        return candidates
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(candidates, labels, index) * pixel_area_mm2
    centroids = ndimage.center_of_mass(candidates, labels, index)
    airway = [
        lab
        for lab, area, (_, _, col) in zip(index, areas, centroids, strict=True)
        if area < AIRWAY_MAX_AREA_MM2 and abs(col - centre) < AIRWAY_MAX_OFFSET * width
    ]
    return candidates & ~np.isin(labels, airway)


def _components_by_size(mask: Mask) -> tuple[npt.NDArray[np.int32], list[int], list[int]]:
    """The 26-connected components' labels, their numbers from the largest down, and their
    sizes in that order."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = label_sizes(labels, count)[1:]
    order = np.argsort(sizes)[::-1]
    return (
        labels.astype(np.int32, copy=False),
        [int(i) + 1 for i in order],
        [int(sizes[i]) for i in order],
    )


def _split_two(mask: Mask) -> tuple[Mask, Mask] | None:
    """Separate touching lungs by eroding until two large parts appear, then regrow."""
    eroded = mask
    for _ in range(MAX_SPLIT_EROSIONS):
        eroded = ndimage.binary_erosion(eroded, structure=IN_PLANE)
        labels, order, sizes = _components_by_size(eroded)
        if len(order) >= 2 and sizes[1] >= 0.2 * sizes[0]:
            seeds = np.where(labels == order[0], 1, 0) + np.where(labels == order[1], 2, 0)
            _, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
            owner = seeds[tuple(nearest)]
            return mask & (owner == 1), mask & (owner == 2)
    return None


def _patient_x(mask: Mask, geometry: VolumeGeometry, box: Box) -> float:
    """Patient x of the mask's mean row and column (the mask is ``box`` of the volume)."""
    _, rows, cols = mean_index(mask)
    rows, cols = rows + box[1].start, cols + box[2].start
    row_mm, col_mm = geometry.pixel_spacing
    offset = geometry.row_cosine * cols * col_mm + geometry.column_cosine * rows * row_mm
    return float(geometry.positions.mean(axis=0)[0] + offset[0])


def segment_lungs(hu: npt.NDArray[np.float32], geometry: VolumeGeometry) -> tuple[Mask, Mask]:
    """(left, right) lung masks of a CT volume in HU, shape (slices, rows, columns)."""
    air = hu < AIR_THRESHOLD_HU
    outside = _outside_air(air)
    body = ~outside
    pixel_area = geometry.pixel_spacing[0] * geometry.pixel_spacing[1]
    candidates = _remove_airways(air & body, body & ~air, pixel_area)
    return split_left_right(candidates, geometry)


def split_left_right(candidates: Mask, geometry: VolumeGeometry) -> tuple[Mask, Mask]:
    """(left, right) lungs from a mask of lung voxels: the two largest 3D components (split by
    erosion when they touch), holes filled per slice, named from patient coordinates.

    All of it runs on the candidates' bounding box, with the margin the in-plane closing
    needs (``volume_ops``): the masks are the ones the whole volume gives."""
    box = bounding_box(candidates, margin=FILL_CLOSINGS + 1)
    if box is None:
        raise InputError("no lungs found: is this a chest CT with the lungs in view?")
    voxel_ml = geometry.voxel_volumes_ml()[box[0]]
    labels, order, _ = _components_by_size(candidates[box])
    largest = [labels == lab for lab in order[:2]]
    volumes = [float(slice_counts(mask) @ voxel_ml) for mask in largest]
    if not volumes or volumes[0] < MIN_LUNG_ML:
        raise InputError("no lungs found: is this a chest CT with the lungs in view?")
    if len(volumes) == 2 and volumes[1] >= 0.1 * volumes[0]:
        parts = (largest[0], largest[1])
    else:
        split = _split_two(largest[0])
        if split is None:
            raise InputError("lungs could not be separated into left and right")
        parts = split
    first, second = (close_and_fill_in_plane(p, FILL_CLOSINGS) for p in parts)
    first, second = first & ~second, second & ~first  # the overlap goes to neither
    if not _patient_x(first, geometry, box) > _patient_x(second, geometry, box):
        first, second = second, first  # LPS: the left lung has the larger x
    left, right = np.zeros(candidates.shape, bool), np.zeros(candidates.shape, bool)
    left[box], right[box] = first, second
    return left, right


class LungCtThreshold:
    def __init__(self, device: str) -> None:
        self.device = device  # runs on the CPU whatever the device; kept for the interface

    def predict(self, series: LoadedSeries) -> ModelOutput:
        geometry = series.require_geometry()
        left, right = segment_lungs(series.frames, geometry)
        return lung_output(left, right, geometry, series.frames)


def lung_output(
    left: Mask, right: Mask, geometry: VolumeGeometry, hu: npt.NDArray[np.floating]
) -> ModelOutput:
    """Left/right lung segments and their volumes (mL, from the slice positions), judged by
    the quality gate (``gate``) on the masks and the CT in HU: its reasons make the result
    ``needs_review``, its signals are in ``extras["quality"]``."""
    quality = gate.signals(left, right, hu, geometry)
    voxel_ml = geometry.voxel_volumes_ml()
    left_ml = float(slice_counts(left) @ voxel_ml)
    right_ml = float(slice_counts(right) @ voxel_ml)
    return ModelOutput(
        segments=[Segment(LEFT_LUNG, left), Segment(RIGHT_LUNG, right)],
        measurements=[
            MeasurementValue(
                "left_lung_volume_ml", "Left lung volume", left_ml, "mL", VOLUME, segment=1
            ),
            MeasurementValue(
                "right_lung_volume_ml", "Right lung volume", right_ml, "mL", VOLUME, segment=2
            ),
            MeasurementValue("lung_volume_ml", "Lung volume", left_ml + right_ml, "mL", VOLUME),
        ],
        review=gate.reasons(quality),
        extras={"quality": quality.as_dict()},
    )


def _load(device: str) -> LungCtThreshold:
    return LungCtThreshold(device)


SPEC = ModelSpec(
    name="lung-ct-threshold",
    version="1.0.0",
    queue="cpu",
    description="Chest CT: left/right lungs by HU threshold + components + airway removal",
    accepts=accepts,
    load=_load,
    algorithm_family="MorphologicalOperations",
    priority=0,
    card=CARD,
)
