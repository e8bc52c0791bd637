"""Chest X-ray building blocks: phantoms and the CR/DX writer, scale rules, lung split,
detection metrics, and ``medseg train lung-cxr|pneumonia`` on tiny folders in the user layouts
(Montgomery, images/ + masks/, RSNA)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from tests.support.films import pairs_layout
from tests.support.tools import dciodvfy_errors
from worker.cli import main
from worker.models._nn.metrics import average_precision, precision_recall
from worker.models._nn.predictor import UNetPredictor
from worker.models.lung_cxr.cr_dicom import write_cxr
from worker.models.lung_cxr.detector import OpacityDetector
from worker.models.lung_cxr.fields import split_lungs
from worker.models.lung_cxr.films import patient_folds, read_films
from worker.models.lung_cxr.lung_data import find_pairs, load_pairs, write_montgomery_layout
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.models.lung_cxr.preprocess import NET_SIZE, display_uint8
from worker.models.lung_cxr.rsna import read_rsna, write_rsna_layout
from worker.models.lung_cxr.scale import radiograph_scale


def test_phantoms_vary_and_keep_opacities_inside_a_lung() -> None:
    sizes = set()
    for seed in range(6):
        p = make_chest_xray(seed, opacities=1)
        sizes.add(p.image.shape)
        assert p.right_lung.any() and p.left_lung.any()
        assert not (p.right_lung & p.left_lung).any()
        # patient's right lung is on the image left
        assert np.nonzero(p.right_lung)[1].mean() < np.nonzero(p.left_lung)[1].mean()
        for x0, y0, x1, y1 in p.boxes:
            assert p.lungs[y0:y1, x0:x1].any()
    assert len(sizes) > 3


@pytest.mark.parametrize(
    ("spacing", "source"),
    [
        ("pixel", "PixelSpacing"),
        ("imager", "ImagerPixelSpacing"),
        ("both", "PixelSpacing"),
        ("zero", None),
        ("none", None),
    ],
)
def test_writer_spacing_variants_and_scale_rules(
    tmp_path: Path, spacing: str, source: str | None
) -> None:
    p = make_chest_xray(3)
    path = write_cxr(p, tmp_path / "x.dcm", spacing=spacing, monochrome1=True)  # type: ignore[arg-type]
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    # MONOCHROME1 is inverted on reading: the display image matches the MONOCHROME2 one.
    shown = display_uint8(ds.pixel_array, monochrome1=True)
    direct = display_uint8(p.image, monochrome1=False)
    assert np.abs(shown.astype(int) - direct.astype(int)).mean() < 3
    scale = radiograph_scale(ds)
    if source is None:
        assert scale.calibration is None and "pixels" in scale.note
    else:
        assert scale.calibration is not None and scale.calibration.source == source
        assert scale.calibration.row_mm == pytest.approx(p.pixel_mm, rel=1e-4)


@pytest.mark.parametrize(("modality", "mono1"), [("CR", False), ("DX", True), ("DX", False)])
def test_phantom_sources_are_valid_cr_and_dx(tmp_path: Path, modality: str, mono1: bool) -> None:
    path = write_cxr(
        make_chest_xray(7),
        tmp_path / "x.dcm",
        modality=modality,  # type: ignore[arg-type]
        spacing="imager" if modality == "DX" else "pixel",
        monochrome1=mono1,
    )
    assert dciodvfy_errors(path) == []


def test_magnification_factor_corrects_imager_spacing(tmp_path: Path) -> None:
    ds = pydicom.dcmread(write_cxr(make_chest_xray(4), tmp_path / "x.dcm", spacing="imager"))
    ds.EstimatedRadiographicMagnificationFactor = "1.25"
    scale = radiograph_scale(ds)
    assert scale.calibration is not None
    assert scale.calibration.row_mm == pytest.approx(float(ds.ImagerPixelSpacing[0]) / 1.25)


def test_split_lungs_separates_and_cuts_merged_fields() -> None:
    p = make_chest_xray(5)
    right, left = split_lungs(p.lungs)
    assert (right == p.right_lung).all() and (left == p.left_lung).all()
    merged = p.lungs.copy()
    rows = np.nonzero(p.lungs.any(axis=1))[0]
    merged[rows[len(rows) // 2], :] |= p.lungs.any(axis=0).cumsum() > 0  # a bridge
    r2, l2 = split_lungs(merged)
    assert r2.any() and l2.any() and not (r2 & l2).any()
    flipped_r, flipped_l = split_lungs(p.lungs, patient_left_on_image_right=False)
    assert (flipped_r == p.left_lung).all() and (flipped_l == p.right_lung).all()


def test_detection_metrics() -> None:
    truth = [[(10.0, 10.0, 20.0, 20.0)], [(0.0, 0.0, 10.0, 10.0)], []]
    perfect = [[((10.0, 10.0, 20.0, 20.0), 0.9)], [((0.0, 0.0, 10.0, 10.0), 0.8)], []]
    assert average_precision(perfect, truth) == pytest.approx(1.0)
    # a confident false positive ranked first: precision 1/2 then 2/3, interpolated to 2/3
    noisy = [perfect[0], perfect[1], [((50.0, 50.0, 60.0, 60.0), 0.95)]]
    assert average_precision(noisy, truth) == pytest.approx(2 / 3)
    assert precision_recall(noisy, truth, 0.85) == pytest.approx((0.5, 0.5))


def test_train_lung_cxr_on_a_montgomery_folder(tmp_path: Path) -> None:
    data = tmp_path / "MontgomerySet"
    names = write_montgomery_layout(data, range(900000, 900004))
    assert len(find_pairs(data)) == len(names) == 4
    out = tmp_path / "lung.pt"
    code = main(
        [
            *("train", "lung-cxr", "--data", str(data), "--out", str(out), "--steps", "2"),
            *("--folds", "0", "--batch-size", "2", "--device", "cpu"),
            *("--label", "tiny Montgomery-layout phantoms"),
        ]
    )
    assert code == 0
    predictor = UNetPredictor(out, "cpu")  # sha256 checked on load
    meta = predictor.metadata
    assert meta["trained_on"] == "tiny Montgomery-layout phantoms"
    assert (meta["train_images"], meta["data"]["patients"]) == (4, 4)  # no images.csv
    assert meta["recipe"]["init"] == "phantom" and meta["recipe"]["steps"] == 2
    assert "cross_validation" not in meta
    assert predictor.input_size == (160, 160)


def test_phantom_films_join_every_training_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--phantom-films N``: N phantoms at the network size, their masks the real masks'
    convention (the lung behind the heart included), added to the real films of a run."""
    from worker.models.lung_cxr import cv_train

    images, masks = cv_train.phantom_arrays(3, (160, 160))
    assert images.shape == masks.shape == (3, 160, 160) and masks.dtype == np.uint8
    fields = make_chest_xray(1).fields
    assert masks[1].mean() / 255 == pytest.approx(fields.mean(), abs=0.01)
    seen: list[int] = []

    class Counting(cv_train.BudgetTrainer):
        def __init__(self, model: object, budget: object, device: str, n: int, *a: object):
            seen.append(n)
            super().__init__(model, budget, device, n, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(cv_train, "BudgetTrainer", Counting)
    data = tmp_path / "MontgomerySet"
    write_montgomery_layout(data, range(900000, 900004))
    out = tmp_path / "lung.pt"
    args = ["--steps", "1", "--folds", "0", "--batch-size", "2", "--device", "cpu"]
    assert main(["train", "lung-cxr", "--data", str(data), "--out", str(out), *args,
                 "--phantom-films", "3"]) == 0  # fmt: skip
    assert seen == [4 + 3]
    assert UNetPredictor(out, "cpu").metadata["recipe"]["phantom_films"] == 3


def test_train_lung_cxr_cross_validates_by_patient(tmp_path: Path) -> None:
    data = tmp_path / "films"
    pairs_layout(data, range(900100, 900106), ["a", "a", "b", "b", "c", "c"])
    films = read_films(data)
    folds = patient_folds(films, 3)
    assert sorted(i for fold in folds for i in fold) == list(range(6))
    for fold in folds:  # each patient's films together, in one fold
        assert len({films[i].patient for i in fold}) == 1
    with pytest.raises(ValueError, match="3 patients"):
        patient_folds(films, 4)
    out = tmp_path / "lung.pt"
    code = main(
        [
            *("train", "lung-cxr", "--data", str(data), "--out", str(out), "--steps", "2"),
            *("--folds", "3", "--batch-size", "2", "--device", "cpu", "--init", "scratch"),
        ]
    )
    assert code == 0
    meta = UNetPredictor(out, "cpu").metadata
    cv = meta["cross_validation"]
    assert [f["fold"] for f in cv["folds"]] == [1, 2, 3]
    assert {r["patient"] for r in cv["records"]} == {"a", "b", "c"} and len(cv["records"]) == 6
    assert cv["out_of_fold"]["films"] == 6
    assert meta["quality_gate"]["fitted_on"].startswith("defaults")  # 6 films: too few
    assert meta["data"] == {
        "folder": "films",
        "films": 6,
        "patients": 3,
        "projections": {"pa": 6, "ap": 0, "": 0},
    }


def test_fold_checkpoints_are_kept_and_an_interrupted_run_resumes(tmp_path: Path) -> None:
    from dataclasses import replace

    from worker.models.lung_cxr.cv_train import CxrRecipe, _finished, cross_validate
    from worker.models.lung_cxr.films import load_films

    data = tmp_path / "films"
    pairs_layout(data, range(900400, 900404), ["a", "a", "b", "b"])
    films = read_films(data)
    arrays = load_films(films, (160, 160))
    recipe = CxrRecipe(init="scratch", steps=2, batch_size=1)
    kept = tmp_path / "folds"
    # Both folds at once, each in its own (spawned) process.
    first = cross_validate(films, arrays, recipe, "cpu", folds=2, keep=kept, reuse=True,
                           parallel=2)  # fmt: skip
    folds = sorted(kept.glob("fold*.pt"))
    assert [p.name for p in folds] == ["fold0.pt", "fold1.pt"]
    for k, weights in enumerate(folds):
        meta = UNetPredictor(weights, "cpu").metadata  # sha256 checked on load
        assert meta["fold"] == k and meta["run"]["steps"] == 2 and meta["recipe"]["steps"] == 2
    written = folds[0].stat().st_mtime_ns
    (kept / "fold1.pt").unlink()  # interrupted before fold 1 was saved
    second = cross_validate(films, arrays, recipe, "cpu", folds=2, keep=kept, reuse=True)
    assert folds[0].stat().st_mtime_ns == written and (kept / "fold1.pt").is_file()
    assert second["folds"][0] == first["folds"][0]
    test = UNetPredictor(folds[0], "cpu").metadata["test"]
    assert _finished(folds[0], recipe, 0, test) is not None
    # Another recipe, fold or split is trained again; a longer wall-clock cap is the same run
    # when every step was done.
    assert _finished(folds[0], replace(recipe, steps=3), 0, test) is None
    assert _finished(folds[0], replace(recipe, learning_rate=1e-3), 0, test) is None
    assert _finished(folds[0], recipe, 1, test) is None
    assert _finished(folds[0], recipe, 0, test[:1]) is None
    assert _finished(folds[0], replace(recipe, max_seconds=7200.0), 0, test) is not None
    assert _finished(kept / "fold9.pt", recipe, 9, test) is None


def test_images_masks_layout_reads_pairs(tmp_path: Path) -> None:
    montgomery = tmp_path / "m"
    write_montgomery_layout(montgomery, [900010, 900011])
    pairs_dir = tmp_path / "pairs"
    (pairs_dir / "images").mkdir(parents=True)
    (pairs_dir / "masks").mkdir()
    for png in sorted((montgomery / "CXR_png").glob("*.png")):
        shutil.copy(png, pairs_dir / "images" / png.name)
        left = cv2.imread(str(montgomery / "ManualMask/leftMask" / png.name), 0)
        right = cv2.imread(str(montgomery / "ManualMask/rightMask" / png.name), 0)
        assert left is not None and right is not None
        cv2.imwrite(str(pairs_dir / "masks" / png.name), np.maximum(left, right))
    images, masks = load_pairs(find_pairs(pairs_dir))
    ref_images, ref_masks = load_pairs(find_pairs(montgomery))
    assert images.shape == (2, *NET_SIZE)
    assert (images == ref_images).all() and (masks == ref_masks).all()
    with pytest.raises(ValueError, match="Montgomery"):
        find_pairs(tmp_path / "m" / "CXR_png")


def test_train_pneumonia_on_an_rsna_folder(tmp_path: Path) -> None:
    data = tmp_path / "rsna"
    ids = write_rsna_layout(data, range(900020, 900024))
    with open(data / "stage_2_train_labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["patientId"] for r in rows} == set(ids)
    items = read_rsna(data)
    assert sum(len(i.boxes) for i in items) == sum(1 for r in rows if r["Target"] == "1") > 0
    out = tmp_path / "det.pt"
    code = main(
        [
            *("train", "pneumonia", "--data", str(data), "--out", str(out), "--epochs", "1"),
            *("--batch-size", "3", "--device", "cpu"),
        ]
    )
    assert code == 0
    detector = OpacityDetector(out, "cpu")  # sha256 checked on load
    assert detector.metadata["train_images"] == 3 and detector.metadata["epochs"] == 1
    image = display_uint8(pydicom.dcmread(items[0].image).pixel_array, monochrome1=False)
    assert len(detector.detect([image])) == 1


def test_evaluate_shipped_models_on_held_out_user_layouts(tmp_path: Path) -> None:
    write_montgomery_layout(tmp_path / "m", range(900030, 900034))
    code = main(
        [
            *("evaluate", "lung-cxr", "--data", str(tmp_path / "m"), "--device", "cpu"),
            *("--json", str(tmp_path / "lungs.json")),
        ]
    )
    assert code == 0
    lungs = json.loads((tmp_path / "lungs.json").read_text())
    assert lungs["films"] == 4 and len(lungs["records"]) == 4
    assert lungs["sides_ok"] == 4 and lungs["hausdorff_px_mean"] is not None
    # Montgomery-convention phantom masks (heart excluded) against real-film fields (lung
    # behind the heart included) and a phantom domain gap: the plumbing, not the accuracy.
    assert lungs["dice_mean"] > 0.8 and lungs["dice_per_side_mean"] > 0.75
    write_rsna_layout(tmp_path / "r", range(900040, 900052))
    code = main(
        [
            *("evaluate", "pneumonia", "--data", str(tmp_path / "r"), "--device", "cpu"),
            *("--json", str(tmp_path / "det.json")),
        ]
    )
    assert code == 0
    det = json.loads((tmp_path / "det.json").read_text())
    assert det["images"] == 12 and det["boxes"] == 8
    assert det["ap50"] > 0.5 and det["recall_at_threshold"] > 0.5


def test_films_failing_annotation_qc_are_scored_but_never_trained_on(tmp_path: Path) -> None:
    from worker.models.lung_cxr.cv_train import CxrRecipe, cross_validate
    from worker.models.lung_cxr.films import load_films, read_qc

    data = tmp_path / "films"
    pairs_layout(data, range(900200, 900204), ["a", "a", "b", "b"])
    bad = sorted(p.name for p in (data / "images").glob("*.png"))[0]
    films = read_films(data, qc={bad: "mask displaced"})
    assert [f.qc for f in films] == ["mask displaced", "", "", ""]
    recipe = CxrRecipe(init="scratch", steps=1, batch_size=1)
    cv = cross_validate(films, load_films(films, (160, 160)), recipe, "cpu", folds=2)
    assert cv["qc_excluded"] == [bad]
    assert len(cv["records"]) == 4  # the untrusted film is still scored...
    assert cv["out_of_fold_qc_passed"]["films"] == 3  # ...and reported apart
    # patient "a" (films 0, 1) is one fold: the other fold trains on "a" minus the bad film
    train_sizes = sorted(f["train_films"] for f in cv["folds"])
    assert train_sizes == [1, 2]
    shipped = read_qc()
    assert len(shipped) == 11 and all(reason for reason in shipped.values())


def test_the_pack_gives_back_the_folder_and_trains_an_ensemble(tmp_path: Path) -> None:
    from worker.models.lung_cxr.films import load_films
    from worker.models.lung_cxr.pack import read_pack

    data = tmp_path / "films"
    pairs_layout(data, range(900300, 900306), ["a", "a", "b", "b", "c", "c"])
    packed = tmp_path / "lung-cxr.npz"
    assert main(["pack", "lung-cxr", "--data", str(data), "--out", str(packed)]) == 0
    films, arrays = read_pack(packed, (160, 160))
    expected = read_films(data)
    assert [(f.name, f.patient, f.projection, f.qc) for f in films] == [
        (f.name, f.patient, f.projection, f.qc) for f in expected
    ]
    folder = load_films(expected, (160, 160))
    assert all(np.array_equal(a, b) for a, b in zip(arrays.images, folder.images, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(arrays.masks, folder.masks, strict=True))
    assert np.array_equal(arrays.net_images, folder.net_images)
    out = tmp_path / "lung.pt"
    code = main(
        [
            *("train", "lung-cxr", "--data", str(packed), "--out", str(out), "--steps", "1"),
            *("--folds", "3", "--ensemble", "--max-members", "2", "--batch-size", "2"),
            *("--device", "cpu", "--init", "scratch"),
        ]
    )
    assert code == 0
    predictor = UNetPredictor(out, "cpu")
    meta = predictor.metadata
    assert meta["config"]["arch"] == "unet-ensemble" and meta["config"]["members"] == 2
    assert len(meta["ensemble"]["members"]) == 2 and "train_images" not in meta  # no final run
    assert meta["cross_validation"]["out_of_fold"]["films"] == 6
    assert meta["schedule"]["folds"] == 3 and meta["schedule"]["ensemble"] is True
    (prob,) = predictor.probabilities([arrays.images[0]])
    assert prob.shape == arrays.images[0].shape
