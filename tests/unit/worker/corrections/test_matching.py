"""Matching a corrected SEG's segments to a result's, and the measurements recomputed on them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from worker.corrections.measure import OldValue, recompute, segments_named
from worker.corrections.segments import SegmentInfo, match_segments
from worker.pipeline.geometry import VolumeGeometry

LEFT = ("44029006", "SCT")
RIGHT = ("3341006", "SCT")
OURS = [SegmentInfo(1, "Left lung", LEFT), SegmentInfo(2, "Right lung", RIGHT)]


def test_segments_match_by_label_case_and_spaces_ignored() -> None:
    corrected = [SegmentInfo(1, "right  LUNG", ("0", "X")), SegmentInfo(2, "left lung", ("0", "X"))]
    assert match_segments(OURS, corrected) == {1: 2, 2: 1}


def test_segments_match_by_property_type_when_relabelled() -> None:
    corrected = [SegmentInfo(3, "Segment_1", RIGHT)]
    assert match_segments(OURS, corrected) == {2: 3}


def test_an_ambiguous_type_or_a_foreign_segment_matches_nothing() -> None:
    twice = [SegmentInfo(1, "a", LEFT), SegmentInfo(2, "b", LEFT)]
    assert match_segments(OURS, twice) == {}
    assert match_segments(OURS, [SegmentInfo(1, "Liver", ("10200004", "SCT"))]) == {}


def test_measurement_names_pick_their_segments() -> None:
    labels = {1: "Left lung", 2: "Right lung", 3: "Fetal brain"}
    assert segments_named("lung", labels) == [1, 2]
    assert segments_named("left_lung", labels) == [1]
    assert segments_named("brain", labels) == [3]
    assert segments_named("liver", labels) == []


def _series(spacing: tuple[float, float], thickness: float, frames: int) -> SimpleNamespace:
    geometry = VolumeGeometry(
        positions=np.array([[0.0, 0.0, k * thickness] for k in range(frames)]),
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        pixel_spacing=spacing,
    )
    return SimpleNamespace(geometry=geometry, datasets=[])


def test_volumes_and_areas_are_recomputed_on_the_corrected_masks() -> None:
    left = np.zeros((4, 10, 10), bool)
    left[:2, :5, :5] = True  # 2 slices x 25 voxels
    right = np.zeros((4, 10, 10), bool)
    right[:, 8:, 8:] = True  # 4 slices x 4 voxels
    old = [
        OldValue("left_lung_volume_ml", "Left lung volume", 9.0, "mL"),
        OldValue("right_lung_volume_ml", "Right lung volume", 9.0, "mL"),
        OldValue("lung_volume_ml", "Lung volume", 18.0, "mL"),
        OldValue("max_slice_area_mm2", "Largest slice area", 1.0, "mm2"),
        OldValue("quality_score", "Quality", 0.5, "1"),
    ]
    series = _series((2.0, 2.0), 5.0, 4)  # voxel: 4 mm2 x 5 mm = 0.02 mL
    done = recompute(old, {1: left, 2: right}, {1: "Left lung", 2: "Right lung"}, series)  # type: ignore[arg-type]
    values = {m.key: m for m in done.measurements}
    assert values["left_lung_volume_ml"].value == pytest.approx(50 * 0.02)
    assert values["left_lung_volume_ml"].segment == 1
    assert values["right_lung_volume_ml"].value == pytest.approx(16 * 0.02)
    assert values["lung_volume_ml"].value == pytest.approx(66 * 0.02)
    assert values["lung_volume_ml"].segment is None  # both lungs: an image-level group
    assert values["max_slice_area_mm2"].value == pytest.approx(29 * 4.0)
    assert values["quality_score"].value == 0.5 and done.kept == ["quality_score"]


def test_a_rank_of_a_recomputed_volume_is_dropped_not_carried_over() -> None:
    brain = np.zeros((4, 10, 10), bool)
    brain[:, 2:8, 2:8] = True
    old = [
        OldValue("brain_volume_ml", "Brain volume", 300.0, "mL"),
        OldValue("brain_volume_z", "Brain volume z-score", 2.5, "{z-score}"),
        OldValue("ventricle_z", "Unrelated rank", 0.1, "{z-score}"),
    ]
    series = _series((2.0, 2.0), 5.0, 4)
    done = recompute(old, {1: brain}, {1: "Fetal brain"}, series)  # type: ignore[arg-type]
    keys = [m.key for m in done.measurements]
    assert "brain_volume_z" not in keys and done.dropped == ["brain_volume_z"]
    assert "ventricle_z" in keys and done.kept == ["ventricle_z"]
