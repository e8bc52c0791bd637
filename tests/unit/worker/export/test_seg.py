from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from tests.support.factories import chest_phantom, chest_series
from tests.support.tools import dciodvfy_errors
from worker.export.seg import write_seg
from worker.models.lung_ct.phantoms import write_chest_series
from worker.models.lung_ct_threshold.serve import SPEC
from worker.pipeline.loading import load_series


def test_lung_seg_reads_back_and_is_a_valid_iod(tmp_path: Path) -> None:
    series = load_series(chest_series(tmp_path / "in", 0))
    output = SPEC.load("cpu").predict(series)
    path = tmp_path / "out" / "seg.dcm"
    uid = write_seg(series, output, SPEC, path).SOPInstanceUID

    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SOPInstanceUID == uid
    assert seg.StudyInstanceUID == series.study_uid
    assert seg.FrameOfReferenceUID == series.datasets[0].FrameOfReferenceUID
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["Left lung", "Right lung"]
    codes = [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence]
    assert codes == ["44029006", "3341006"]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == SPEC.name and algorithm.AlgorithmVersion == SPEC.version
    assert "RecommendedDisplayCIELabValue" in seg.SegmentSequence[0]

    # Every voxel survives the round trip, per segment.
    frames = seg.pixel_array
    frame_segments = [
        f.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    for number, segment in enumerate(output.segments, start=1):
        voxels = sum(
            int(frame.sum()) for frame, s in zip(frames, frame_segments, strict=True) if s == number
        )
        assert voxels == int(np.count_nonzero(segment.mask))

    assert dciodvfy_errors(path) == []


def test_encoding_follows_the_columns_for_volumes_and_stills_alike(tmp_path: Path) -> None:
    """Issue 28 item 10 (docs/conformance.md): Columns not a multiple of 8 make a FRACTIONAL
    (8-bit) SEG whatever the source, a CT volume with a frame of reference included; a
    multiple of 8, BINARY."""
    for size, expected in ((130, "FRACTIONAL"), (128, "BINARY")):
        phantom = chest_phantom(0, slices=8, size=size)
        series = load_series(write_chest_series(phantom, tmp_path / f"in{size}"))
        assert int(series.datasets[0].Columns) == size
        assert "FrameOfReferenceUID" in series.datasets[0]
        output = SPEC.load("cpu").predict(series)
        path = tmp_path / f"out{size}" / "seg.dcm"
        write_seg(series, output, SPEC, path)
        seg = pydicom.dcmread(path)
        assert seg.SegmentationType == expected
        assert int(seg.BitsAllocated) == (8 if expected == "FRACTIONAL" else 1)
        assert dciodvfy_errors(path) == []
