"""The SEG's pixel array as a label map (issue 29): the same SEG as the stack of segments it
replaced, frame for frame, and it decodes to the models' masks voxel for voxel."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pytest

import worker.export.seg as seg_module
from tests.support.factories import chest_series
from tests.support.tools import dciodvfy_errors
from worker.export.outputs import LEFT_LUNG, RIGHT_LUNG, ModelOutput, Segment
from worker.export.seg import build_seg, save_atomic, segment_pixels
from worker.models.lung_ct_threshold.serve import SPEC
from worker.pipeline.loading import LoadedSeries, load_series


def _stack(masks: list[npt.NDArray[np.bool_]]) -> npt.NDArray[np.uint8]:
    """The pixel array before issue 29: segments stacked on a last axis."""
    stacked: npt.NDArray[np.uint8] = np.stack(masks, axis=-1).astype(np.uint8)
    return stacked


def test_label_map_where_segments_are_apart_the_stack_where_they_overlap() -> None:
    a = np.zeros((2, 4, 8), bool)
    b = np.zeros((2, 4, 8), bool)
    a[0, :2], b[1, 2:] = True, True
    labels = segment_pixels([a, b])
    assert labels.shape == (2, 4, 8) and labels.dtype == np.uint8
    assert np.array_equal(labels == 1, a) and np.array_equal(labels == 2, b)
    b[0, 1] = True  # now overlapping a
    stacked = segment_pixels([a, b])
    assert np.array_equal(stacked, _stack([a, b]))


@pytest.fixture(scope="module")
def lungs(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedSeries, ModelOutput]:
    series = load_series(chest_series(tmp_path_factory.mktemp("in"), 0))
    return series, SPEC.load("cpu").predict(series)


def test_the_label_map_writes_the_seg_the_stack_wrote(
    lungs: tuple[LoadedSeries, ModelOutput], monkeypatch: pytest.MonkeyPatch
) -> None:
    series, output = lungs
    new = build_seg(series, output, SPEC)
    monkeypatch.setattr(seg_module, "segment_pixels", _stack)
    old = build_seg(series, output, SPEC)
    assert int(new.NumberOfFrames) == int(old.NumberOfFrames)
    assert new.PixelData == old.PixelData
    assert new.SegmentsOverlap == old.SegmentsOverlap == "NO"
    assert list(new.PerFrameFunctionalGroupsSequence) == list(old.PerFrameFunctionalGroupsSequence)
    assert new.SharedFunctionalGroupsSequence == old.SharedFunctionalGroupsSequence


def test_the_seg_decodes_to_the_masks_voxel_for_voxel(
    lungs: tuple[LoadedSeries, ModelOutput], tmp_path: Path
) -> None:
    series, output = lungs
    # Slices where a lung is absent: those frames are omitted, and must come back empty.
    left = output.segments[0].mask.copy()
    left[:3] = False
    output = ModelOutput([Segment(LEFT_LUNG, left), Segment(RIGHT_LUNG, output.segments[1].mask)])
    path = tmp_path / "seg.dcm"
    save_atomic(build_seg(series, output, SPEC), path)

    seg = hd.seg.segread(path)
    uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1, 2], combine_segments=False
    )
    for number, segment in enumerate(output.segments):
        assert np.array_equal(pixels[..., number].astype(bool), segment.mask)
    assert dciodvfy_errors(path) == []
