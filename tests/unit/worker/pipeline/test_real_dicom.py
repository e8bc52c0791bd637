"""Real files from pydicom's and pydicom-data's test sets (found through the packages, never
copied here), some altered the way real sites' series look."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.support.tools import dciodvfy_errors
from worker.export.outputs import FETAL_HEAD, ModelOutput, Segment
from worker.export.seg import write_seg
from worker.models.fetal_head.serve import SPEC
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.batch import process_paths
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import load_series, read_headers, read_series
from worker.pipeline.run import run_series

MODELS = ModelCache("cpu")


def _real(name: str) -> Path:
    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} is not in pydicom's or pydicom-data's test files")
    return Path(str(found))


def _copy(names: list[str], folder: Path, **tags: str) -> list[Path]:
    """Copies of real files, with ``tags`` set (e.g. the series description a site sends)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        if tags:
            ds = pydicom.dcmread(_real(name))
            for keyword, value in tags.items():
                setattr(ds, keyword, value)
            ds.save_as(path)
        else:
            shutil.copy(_real(name), path)
        paths.append(path)
    return paths


def _seg_sources(seg: pydicom.Dataset) -> list[str]:
    return [
        str(source.ReferencedSOPInstanceUID)
        for item in seg.PerFrameFunctionalGroupsSequence
        for derivation in item.DerivationImageSequence
        for source in derivation.SourceImageSequence
    ]


def test_four_rg1_files_are_one_series_of_three_radiographs_in_one_seg(tmp_path: Path) -> None:
    paths = _copy(["RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_UNCR.dcm", "RG1_J2KI.dcm"], tmp_path / "in")
    headers = read_series(paths)
    assert len(headers.paths) == 3  # RG1_J2KI is RG1_UNCI's image, lossy: one copy kept
    assert "RG1_J2KI.dcm" not in {p.name for p in headers.paths}
    result = run_series(paths, MODELS, tmp_path / "out")
    seg_path = next(o.path for o in result.outputs if o.kind == "seg")
    seg = pydicom.dcmread(seg_path)
    assert int(seg.NumberOfFrames) == 6  # two lung fields on each of three images
    assert len(set(_seg_sources(seg))) == 3
    assert int(seg.SeriesNumber) == int(pydicom.dcmread(paths[0]).SeriesNumber) * 100 + 91
    assert any("duplicate" in w for w in result.warnings)
    back = hd.seg.segread(seg_path)
    assert len(back.get_source_image_uids()) == 3
    assert dciodvfy_errors(seg_path) == []
    sr_path = next(o.path for o in result.outputs if o.kind == "sr")
    assert dciodvfy_errors(sr_path) == []


def test_two_us_stills_of_one_series_make_valid_segs(tmp_path: Path) -> None:
    paths = _copy(["US1_UNCI.dcm", "US1_J2KR.dcm"], tmp_path / "in", SeriesDescription="FETAL HEAD")
    series = load_series(paths)
    assert series.frames.shape == (2, 480, 640)
    mask = np.zeros(series.frames.shape, dtype=bool)
    mask[:, 100:200, 150:300] = True
    uids = {str(ds.SOPInstanceUID) for ds in series.datasets}
    # Masks on every still: one SEG, a frame per still.
    every = write_seg(series, ModelOutput([Segment(FETAL_HEAD, mask)]), SPEC, tmp_path / "a.dcm")
    assert set(_seg_sources(every)) == uids and int(every.NumberOfFrames) == 2
    assert dciodvfy_errors(tmp_path / "a.dcm") == []
    assert len(hd.seg.segread(tmp_path / "a.dcm").get_source_image_uids()) == 2
    # The model's one measured still: the SEG is of that image.
    one = ModelOutput([Segment(FETAL_HEAD, mask[1:])], source_frame=1)
    seg = write_seg(series, one, SPEC, tmp_path / "b.dcm")
    assert _seg_sources(seg) == [str(series.datasets[1].SOPInstanceUID)]
    assert dciodvfy_errors(tmp_path / "b.dcm") == []
    # Through the pipeline: a result, or the model's own reason (US1 is not a fetal head).
    rows, _ = process_paths([tmp_path / "in"], tmp_path / "out", MODELS, overlap=False)
    (row,) = rows
    assert row.model == SPEC.name
    assert row.status in ("succeeded", "needs_review") or row.error == (
        "no fetal head found in any frame"
    )


def test_two_phantom_stills_given_one_series_uid_work(tmp_path: Path) -> None:
    first = write_us_phantom(tmp_path / "in" / "a.dcm", 200040).path
    second = write_us_phantom(tmp_path / "in" / "b.dcm", 200041).path
    a = pydicom.dcmread(first)
    b = pydicom.dcmread(second)
    b.StudyInstanceUID, b.SeriesInstanceUID, b.InstanceNumber = (
        a.StudyInstanceUID,
        a.SeriesInstanceUID,
        2,
    )
    b.PatientID, b.PatientName = a.PatientID, a.PatientName
    b.save_as(second)
    rows, _ = process_paths([tmp_path / "in"], tmp_path / "out", MODELS, overlap=False)
    (row,) = rows
    assert row.status in ("succeeded", "needs_review"), row.error
    seg_path = next(Path(p) for p in row.outputs if p.endswith("seg.dcm"))
    assert dciodvfy_errors(seg_path) == []


def test_cine_seg_names_the_frame_only_where_the_standard_puts_it(tmp_path: Path) -> None:
    phantom = write_us_phantom(tmp_path / "cine.dcm", 200031, frames=3)
    result = run_series([phantom.path], MODELS, tmp_path / "out")
    seg = pydicom.dcmread(next(o.path for o in result.outputs if o.kind == "seg"))
    for series in seg.ReferencedSeriesSequence:
        for item in series.ReferencedInstanceSequence:
            assert "ReferencedFrameNumber" not in item
    assert all("ReferencedFrameNumber" in item for item in seg.SourceImageSequence)


def test_enhanced_ct_geometry_comes_from_the_functional_groups() -> None:
    path = _real("eCT_Supplemental.dcm")
    series = load_series([path])
    geometry = series.require_geometry()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    positions = [
        [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
    assert series.frames.shape == (2, 512, 512)
    assert sorted(map(tuple, geometry.positions.tolist())) == sorted(map(tuple, positions))
    assert np.all(np.diff(geometry.slice_locations) > 0)  # stack order


def test_single_slice_ct_is_loaded_with_geometry_and_skipped_by_volume_models(
    tmp_path: Path,
) -> None:
    series = load_series([_real("CT_small.dcm")])
    assert series.geometry is not None and series.geometry.positions.shape == (1, 3)
    (path,) = _copy(["CT_small.dcm"], tmp_path / "in", BodyPartExamined="CHEST")
    rows, _ = process_paths([path], tmp_path / "out", MODELS, overlap=False)
    (row,) = rows
    assert row.status == "skipped" and row.model is not None
    assert "needs a volume" in str(row.error)
    mr = load_series([_real("MR2_UNCI.dcm")])
    assert mr.geometry is not None and mr.geometry.pixel_spacing[0] > 0


@pytest.mark.parametrize("name", ["rtplan.dcm", "waveform_ecg.dcm", "test-SR.dcm", "reportsi.dcm"])
def test_non_images_are_skipped_with_a_reason_before_any_decoding(
    name: str, tmp_path: Path
) -> None:
    rows, _ = process_paths([_real(name)], tmp_path / "out", MODELS, overlap=False)
    (row,) = rows
    assert row.status == "skipped", row.error
    assert "not an image" in str(row.error)


def test_our_own_seg_coming_back_is_skipped(tmp_path: Path) -> None:
    phantom = write_us_phantom(tmp_path / "cine.dcm", 200032, frames=2)
    result = run_series([phantom.path], MODELS, tmp_path / "first")
    seg = next(o.path for o in result.outputs if o.kind == "seg")
    rows, _ = process_paths([seg], tmp_path / "again", MODELS, overlap=False)
    assert rows[0].status == "skipped" and "Segmentation Storage" in str(rows[0].error)


def test_emri_copies_are_one_series_and_one_image(tmp_path: Path) -> None:
    names = ["emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm"]
    groups, skipped = read_headers(_copy(names, tmp_path / "in"))
    assert skipped == [] and len(groups) == 1
    headers = read_series(next(iter(groups.values())))
    assert [p.name for p in headers.paths] == ["emri_small.dcm"]


def test_a_file_without_series_uid_says_so(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_real("CT_small.dcm"))
    del ds.SeriesInstanceUID
    ds.save_as(tmp_path / "noseries.dcm")
    (tmp_path / "notes.txt").write_text("not DICOM")
    _, skipped = read_headers([tmp_path / "noseries.dcm", tmp_path / "notes.txt"])
    reasons = dict(skipped)
    assert "no SeriesInstanceUID" in reasons[tmp_path / "noseries.dcm"]
    assert "not a DICOM file" in reasons[tmp_path / "notes.txt"]


def test_a_routed_series_that_fails_names_its_model(tmp_path: Path) -> None:
    (path,) = _copy(["emri_small.dcm"], tmp_path / "in", SeriesDescription="FETAL BRAIN")
    rows, _ = process_paths([path], tmp_path / "out", MODELS, overlap=False)
    (row,) = rows
    assert row.status == "failed" and row.model is not None
    assert "per-frame functional groups" in str(row.error)
