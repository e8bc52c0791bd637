"""The SR document built around highdicom's header equals highdicom's own whole document."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import Dataset

from worker.export.seg import build_seg
from worker.export.sr import _require_evidence, build_sr
from worker.models.fetal_head.serve import SPEC
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import load_series

ROOT_KEYWORDS = (
    "ValueType",
    "ConceptNameCodeSequence",
    "ContinuityOfContent",
    "ContentTemplateSequence",
    "ContentSequence",
)
CLOCK = {
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ContentDate",
    "ContentTime",
    "ContributionDateTime",
}


def _without_clock(ds: Dataset) -> dict[str, object]:
    out: dict[str, object] = {}
    for element in ds:
        if element.keyword in CLOCK:
            continue
        if element.VR == "SQ":
            out[element.keyword] = [_without_clock(item) for item in element.value]
        else:
            out[element.keyword] = element.value
    return out


def test_document_equals_highdicoms_comprehensive_3d_sr(tmp_path: Path) -> None:
    phantom = write_us_phantom(tmp_path / "us.dcm", 4711, frames=2)
    series = load_series([phantom.path])
    output = ModelCache("cpu").get(SPEC).predict(series)
    seg = build_seg(series, output, SPEC)
    document = build_sr(series, output, SPEC, seg)
    assert document is not None

    root = Dataset()
    for keyword in ROOT_KEYWORDS:
        setattr(root, keyword, copy.deepcopy(document[keyword].value))
    reference = hd.sr.Comprehensive3DSR(
        evidence=[*series.datasets, seg],
        content=root,
        series_instance_uid=document.SeriesInstanceUID,
        series_number=document.SeriesNumber,
        sop_instance_uid=document.SOPInstanceUID,
        instance_number=1,
        manufacturer="medseg",
        is_complete=True,
        series_description=document.SeriesDescription,
        software_versions=document.SoftwareVersions,
    )
    assert _without_clock(document) == _without_clock(reference)
    assert _without_clock(document.file_meta) == _without_clock(reference.file_meta)


def test_content_referencing_an_instance_outside_the_evidence_is_refused() -> None:
    reference = Dataset()
    reference.ReferencedSOPInstanceUID = "1.2.3.4"
    leaf = Dataset()
    leaf.ReferencedSOPSequence = [reference]
    group = Dataset()
    group.ContentSequence = [leaf]
    root = Dataset()
    root.ContentSequence = [group]
    known = Dataset()
    known.SOPInstanceUID = "1.2.3.5"
    with pytest.raises(ValueError, match=r"1\.2\.3\.4"):
        _require_evidence(root, [known])
    known.SOPInstanceUID = "1.2.3.4"
    _require_evidence(root, [known])
