"""``medseg export-training``: each model's layout read back by that model's own training
readers, subjects keyed by patient, and no patient data anywhere in the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support.fetal_cases import fetal_brain_result, fetal_head_result
from tests.support.reviewed import PHI, reviewed_result, stamp_phi
from worker.core.settings import Settings
from worker.export.outputs import LEFT_LUNG
from worker.trainset.deid import Pseudonyms
from worker.trainset.export import export_training

SECRET = "a site secret of more than 16 characters"


def _fetal_head_case(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    seed: int,
    patient_id: str,
    decision: str | None = "accepted",
) -> float:
    _, truth = fetal_head_result(
        session_factory, tmp_path, seed, patient_id=patient_id, decision=decision
    )
    return truth.hc_mm


def test_fetal_head_export_is_read_by_the_hc18_training_readers(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from worker.models.fetal_head.frames import from_folder
    from worker.models.fetal_head.hc18 import load_mask, read_index
    from worker.models.fetal_head.hc18_split import subject_of

    hcs = [
        _fetal_head_case(session_factory, tmp_path, 11, "PID-1"),
        _fetal_head_case(session_factory, tmp_path, 12, "PID-1"),  # the same patient again
        _fetal_head_case(session_factory, tmp_path, 13, "PID-2"),
    ]
    _fetal_head_case(session_factory, tmp_path, 14, "PID-3", decision="rejected")
    _fetal_head_case(session_factory, tmp_path, 15, "PID-4", decision=None)

    summary = export_training(session_factory, "fetal-head", tmp_path / "x", secret=SECRET)

    assert summary.written == 3 and len(summary.subjects) == 2
    items = read_index(tmp_path / "x")
    assert [i.hc_mm for i in items] == pytest.approx(hcs, abs=0.01)
    assert len({subject_of(i) for i in items}) == 2
    assert subject_of(items[0]) == subject_of(items[1]) == Pseudonyms(SECRET).subject("PID-1", "")
    for item, hc in zip(items, hcs, strict=True):
        # The annotation's ellipse, refitted by the training reader, gives the HC back.
        mask = load_mask(item.annotation)
        from worker.models.fetal_head.biometry import fit_ellipse_mm

        ellipse = fit_ellipse_mm(mask, (item.pixel_mm, item.pixel_mm))
        assert ellipse is not None
        assert ellipse.circumference == pytest.approx(hc, rel=0.01)
    frames = from_folder(tmp_path / "x", (64, 96))
    assert frames.images.shape == frames.masks.shape == (3, 64, 96)
    assert frames.masks.max() == 255


def test_fetal_brain_export_is_read_by_nifti_pairs(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from worker.models.fetal_brain.data import load_training_set, nifti_pairs

    case = fetal_brain_result(session_factory, tmp_path, "PID-9")
    stack, series, truth = case.stack, case.series, case.brain

    export_training(session_factory, "fetal-brain-unet", tmp_path / "x", secret=SECRET)

    ((name, image, mask, zooms),) = list(nifti_pairs(tmp_path / "x"))
    assert name.startswith(Pseudonyms(SECRET).subject("PID-9", ""))
    assert image.shape == series.frames.shape
    assert np.array_equal(mask, truth)
    assert np.allclose(image, series.frames, atol=0.5)
    assert zooms == pytest.approx((stack.pixel_mm, stack.pixel_mm, stack.slice_mm), rel=1e-3)
    images, masks = load_training_set(tmp_path / "x")
    assert len(images) == len(masks) > 0


def test_chest_film_export_is_read_by_read_films(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from worker.models.lung_cxr.cr_dicom import write_cxr
    from worker.models.lung_cxr.films import load_films, read_films
    from worker.models.lung_cxr.phantoms import make_chest_xray

    truths = []
    for seed, patient in ((1, "PID-A"), (2, "PID-A"), (3, "PID-B")):
        phantom = make_chest_xray(seed)
        path = write_cxr(phantom, tmp_path / f"cr{seed}.dcm", patient_id=patient)
        stamp_phi([path], patient)
        truths.append(phantom.lungs)
        reviewed_result(
            session_factory,
            [path],
            "lung-cxr",
            LEFT_LUNG,
            phantom.lungs[None],
            {"lung_area_cm2": (float(phantom.lungs.sum()) / 100, "cm2")},
            tmp_path / f"out{seed}",
        )

    export_training(session_factory, "lung-cxr", tmp_path / "x", secret=SECRET)

    films = read_films(tmp_path / "x", qc={})
    assert len(films) == 3
    assert len({f.patient for f in films}) == 2
    assert films[0].patient == films[1].patient == Pseudonyms(SECRET).subject("PID-A", "")
    assert {f.projection for f in films} == {"pa"}
    arrays = load_films(films)
    for mask, truth in zip(arrays.masks, truths, strict=True):
        assert np.array_equal(mask, truth)


def _all_bytes(folder: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def test_no_patient_data_uids_or_dates_in_the_export(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _fetal_head_case(session_factory, tmp_path, 21, PHI["PatientID"])
    export_training(session_factory, "fetal-head-unet", tmp_path / "x", secret=SECRET)
    ds = pydicom.dcmread(tmp_path / "us21.dcm")
    forbidden = [
        *PHI.values(),
        "Doe",
        "Jane",
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        "alice",  # the reviewer's name: only the role is exported
        "2024-03-15",
    ]
    files = _all_bytes(tmp_path / "x")
    assert len(files) == 4  # image, annotation, CSV, manifest
    for path, content in files:
        for value in forbidden:
            assert value.encode() not in content, f"{value!r} in {path}"
            assert value not in path
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    (case,) = manifest["cases"]
    assert case["reviewer_role"] == "reviewer"
    assert case["decision"] == "accepted"
    assert case["model"] == "fetal-head-unet" and case["model_version"]
    assert case["study"] == Pseudonyms(SECRET).uid(str(ds.StudyInstanceUID))


def test_subject_keys_are_stable_under_one_secret_and_differ_under_another() -> None:
    one, again, other = Pseudonyms(SECRET), Pseudonyms(SECRET), Pseudonyms(SECRET + "x")
    assert one.subject("PID-1", "1.2") == again.subject("PID-1", "1.3")
    assert one.subject("PID-1", "1.2") != other.subject("PID-1", "1.2")
    assert one.subject("PID-1", "1.2") != one.subject("PID-2", "1.2")
    assert one.subject(None, "1.2") != one.subject(None, "1.3")  # by study without an ID
    with pytest.raises(ValueError, match="16 characters"):
        Pseudonyms("short")


def test_cli_refuses_without_a_secret_and_exports_with_one(
    session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    _fetal_head_case(session_factory, tmp_path, 31, "PID-1")
    env = {
        **os.environ,
        "MEDSEG_DATABASE_URL": settings.database_url,
        "MEDSEG_DATA_DIR": str(settings.data_dir),
    }
    env.pop("MEDSEG_TRAINING_EXPORT_SECRET", None)

    def export(out: Path, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "export-training",
                "fetal-head-unet",
                "--out",
                str(out),
                "--decision",
                "accepted",
            ],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    refused = export(tmp_path / "a", {})
    assert refused.returncode == 2 and "MEDSEG_TRAINING_EXPORT_SECRET" in refused.stderr
    done = export(tmp_path / "b", {"MEDSEG_TRAINING_EXPORT_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    assert "1 case(s) of fetal-head-unet from 1 subject(s) in the hc18 layout" in done.stdout
