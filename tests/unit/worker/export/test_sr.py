"""TID 1500 measurement reports: read back, linked to SEG segments and sources, valid IODs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.support.factories import chest_series
from tests.support.tools import dciodvfy_errors, need_tool
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series

MODELS = ModelCache("cpu")


def _outputs(result) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    return {o.kind: o.path for o in result.outputs}


def test_ct_report_has_a_volumetric_group_per_lung_and_the_total(tmp_path: Path) -> None:
    result = run_series(chest_series(tmp_path / "in", 0, slices=12), MODELS, tmp_path / "out")
    paths = _outputs(result)
    seg = pydicom.dcmread(paths["seg"])
    sr = hd.sr.srread(paths["sr"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    measured = {m.key: m.value for m in result.measurements}

    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    for group, (number, key) in zip(
        groups, [(1, "left_lung_volume_ml"), (2, "right_lung_volume_ml")], strict=True
    ):
        reference = group.referenced_segment
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert reference.referenced_segment_numbers == [number]
        (volume,) = group.get_measurements()
        assert volume.name.value == "118565006" and volume.unit.value == "ml"
        assert volume.value == pytest.approx(measured[key])
    totals = sr.content.get_image_measurement_groups()
    assert totals[0].get_measurements()[0].value == pytest.approx(measured["lung_volume_ml"])

    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence and len(evidence) == 13
    assert dciodvfy_errors(paths["sr"]) == []


def test_us_report_references_the_measured_frame(tmp_path: Path) -> None:
    phantom = write_us_phantom(tmp_path / "cine.dcm", 200032, frames=3)
    result = run_series([phantom.path], MODELS, tmp_path / "out")
    paths = _outputs(result)
    sr = hd.sr.srread(paths["sr"])
    (group,) = sr.content.get_planar_roi_measurement_groups()
    names = {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}
    assert set(names) == {"11984-2", "11820-8", "11851-3", "11932-1"}  # HC, BPD, OFD, GA
    assert names["11984-2"][1] == "mm" and names["11932-1"][1] == "d"
    assert names["11984-2"][0] == pytest.approx(phantom.truth.hc_mm, abs=4.0)  # real-data model
    # The GA carries the Hadlock formula's +/-2 SD (days) as its measurement uncertainty.
    (ga,) = [m for m in group.get_measurements() if m.name.value == "11932-1"]
    two_sd = {m.key: m.value for m in result.measurements}["gestational_age_2sd_weeks"] * 7.0
    uncertainty = {
        item.ConceptNameCodeSequence[0].CodeMeaning: float(
            item.MeasuredValueSequence[0].NumericValue
        )
        for item in ga[0].ContentSequence
        if item.ValueType == "NUM"
    }
    assert uncertainty == {
        "+, range of upper measurement uncertainty": pytest.approx(two_sd),
        "-, range of lower measurement uncertainty": pytest.approx(two_sd),
    }
    frame_refs = [
        ref.ReferencedFrameNumber
        for item in sr.ContentSequence
        for sub in item.get("ContentSequence", [])
        for leaf in sub.get("ContentSequence", [])
        for ref in leaf.get("ReferencedSOPSequence", [])
        if "ReferencedFrameNumber" in ref
    ]
    assert frame_refs  # the SEG frame is referenced
    assert dciodvfy_errors(paths["sr"]) == []
    assert dciodvfy_errors(paths["seg"]) == []


def test_dcmqi_reads_the_ct_seg_back_to_the_same_voxels(tmp_path: Path) -> None:
    import nrrd

    tool = need_tool("segimage2itkimage")
    result = run_series(chest_series(tmp_path / "in", 1, slices=12), MODELS, tmp_path / "out")
    seg_path = _outputs(result)["seg"]
    out = tmp_path / "nrrd"
    out.mkdir()
    done = subprocess.run(
        [tool, "--inputDICOM", str(seg_path), "--outputDirectory", str(out), "-t", "nrrd"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array
    numbers = [
        g.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        for g in seg.PerFrameFunctionalGroupsSequence
    ]
    for number in (1, 2):
        data, _ = nrrd.read(str(out / f"{number}.nrrd"))
        expected = sum(int(f.sum()) for f, n in zip(frames, numbers, strict=True) if n == number)
        assert int(np.count_nonzero(data)) == expected > 0


def test_each_sr_item_says_exactly_what_it_is(tmp_path: Path) -> None:
    """Issue 28 item 5: the total has the segments it covers as Finding Sites; sizes in
    pixels keep no LOINC/SNOMED size concept (left out, the segment's group stays); a
    single-plane area in a volume is coded only with its derivation (Maximum)."""
    from worker.export.outputs import AREA, MAXIMUM, MeasurementValue
    from worker.export.sr import codable

    result = run_series(chest_series(tmp_path / "ct", 0, slices=12), MODELS, tmp_path / "ct-out")
    sr = hd.sr.srread(_outputs(result)["sr"])
    (total,) = sr.content.get_image_measurement_groups()[0].get_measurements()
    assert {site.value.value for site in total.finding_sites} == {"44029006", "3341006"}

    phantom = write_us_phantom(tmp_path / "us.dcm", 200032, calibrated=False)
    uncalibrated = run_series([phantom.path], MODELS, tmp_path / "us-out")
    assert "head_circumference_px" in {m.key for m in uncalibrated.measurements}
    paths = _outputs(uncalibrated)
    (group,) = hd.sr.srread(paths["sr"]).content.get_planar_roi_measurement_groups()
    assert group.get_measurements() == []  # no HC/BPD/OFD code with a pixel value
    assert group.referenced_segmentation_frame is not None
    assert dciodvfy_errors(paths["sr"]) == []

    largest = MeasurementValue("max_slice_area_mm2", "Largest slice", 3.0, "mm2", AREA, 1)
    assert codable(largest, volumetric=False)
    assert not codable(largest, volumetric=True)
    assert codable(MeasurementValue(**{**largest.__dict__, "derivation": MAXIMUM}), True)
