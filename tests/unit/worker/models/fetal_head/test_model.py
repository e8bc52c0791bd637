"""Golden tests of the shipped fetal head model on held-out phantoms, and its DICOM path."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.support.tools import dciodvfy_errors
from worker.core.errors import NothingFoundError
from worker.core.routing import route
from worker.core.tags import SeriesTags
from worker.export.seg import write_seg
from worker.models._nn import checkpoint
from worker.models._nn.schedule import Plan, Schedule
from worker.models.fetal_head.evaluate import evaluate_frames, summarise
from worker.models.fetal_head.hc18 import load_mask, read_index
from worker.models.fetal_head.phantoms import HC18_SHAPE, make_fetal_head_frame, write_hc18_layout
from worker.models.fetal_head.predictor import FetalHeadPredictor
from worker.models.fetal_head.serve import DEFAULT_WEIGHTS, SPEC, accepts
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.loading import load_series

HELD_OUT = range(200000, 200012)


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return SPEC.load("cpu")


def test_shipped_weights_are_versioned_with_their_checksum() -> None:
    meta = checkpoint.read_metadata(DEFAULT_WEIGHTS)
    assert meta["sha256"] == checkpoint.sha256_of(DEFAULT_WEIGHTS)
    assert "HC18" in meta["trained_on"] and meta["version"] == SPEC.version
    assert "van den Heuvel" in meta["citation"] and "CC BY 4.0" in meta["licence"]
    assert meta["model_card"]["validation_status"] == "validated-real"
    held_out = meta["evaluation_held_out"]
    assert held_out["weights_sha256"] == meta["sha256"]
    assert held_out["subjects"] == len(meta["split"]["test_subjects"])
    assert held_out["no_answer"] == 0 and held_out["hc_abs_diff_mm"]["mean"] < 2.5
    assert set(meta["quality_gate"]) >= {"min_ellipse_iou", "min_confidence", "fitted_on"}


def test_altered_weights_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    shutil.copy(checkpoint.metadata_path(DEFAULT_WEIGHTS), checkpoint.metadata_path(weights))
    with open(weights, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(checkpoint.CheckpointError, match="sha256"):
        checkpoint.load(weights, "cpu")


def test_hc18_layout_round_trip(tmp_path: Path) -> None:
    write_hc18_layout(tmp_path, [5, 6])
    items = read_index(tmp_path)
    assert [i.image.name for i in items] == ["005_HC.png", "006_HC.png"]
    truth = make_fetal_head_frame(5).truth
    assert items[0].hc_mm == pytest.approx(truth.hc_mm, abs=0.01)
    mask = load_mask(items[0].annotation)
    exact = truth.mask(HC18_SHAPE)
    assert 2 * (mask & exact).sum() / (mask.sum() + exact.sum()) > 0.998


def test_phantoms_cover_the_hc18_ranges() -> None:
    truths = [make_fetal_head_frame(s).truth for s in range(40)]
    assert all(0.05 <= t.pixel_mm <= 0.33 for t in truths)
    assert all(50 <= t.hc_mm <= 350 for t in truths)
    assert max(t.hc_mm for t in truths) - min(t.hc_mm for t in truths) > 150


def test_golden_phantoms_are_measured_or_flagged(tmp_path: Path) -> None:
    """The weights learned real ultrasound, not our phantoms: what the gate accepts of them is
    accurate, and every gross miss is flagged for review instead of reported as sure."""
    write_hc18_layout(tmp_path, HELD_OUT)
    records = evaluate_frames(FetalHeadPredictor(DEFAULT_WEIGHTS), read_index(tmp_path))
    summary = summarise(records)
    assert summary["no_answer"] == 0
    assert summary["gate"]["flagged_share"] <= 0.5
    assert summary["gate"]["accepted_hc_abs_diff_mm"]["mean"] <= 2.5
    assert summary["gate"]["accepted_dice"]["mean"] >= 0.97
    for r in records:
        assert r.hc_diff_mm is not None
        assert abs(r.hc_diff_mm) <= 10 or r.review, r


def test_calibrated_us_dicom_gives_mm_and_ga(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phantom = write_us_phantom(tmp_path / "us.dcm", 200010)
    output = model.predict(load_series([phantom.path]))
    values = {m.key: m.value for m in output.measurements}
    assert values["head_circumference_mm"] == pytest.approx(phantom.truth.hc_mm, abs=4.0)
    assert values["biparietal_diameter_mm"] == pytest.approx(phantom.truth.bpd_mm, abs=3.0)
    assert values["occipitofrontal_diameter_mm"] == pytest.approx(phantom.truth.ofd_mm, abs=3.0)
    assert 70 < values["gestational_age_days"] < 300
    truth_index = 100 * phantom.truth.bpd_mm / phantom.truth.ofd_mm
    assert values["cephalic_index"] == pytest.approx(truth_index, abs=3.0)
    shape = output.extras["cephalic_index"]
    assert isinstance(shape, dict) and shape["normal_range"] == [74.0, 83.0]
    assert shape["within_normal_range"] == (74.0 <= values["cephalic_index"] <= 83.0)
    assert output.warnings == []


def test_rgb_cine_reports_the_best_frame(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phantom = write_us_phantom(tmp_path / "cine.dcm", 200011, frames=5, rgb=True)
    series = load_series([phantom.path])
    assert series.frames.shape == (5, *HC18_SHAPE)
    output = model.predict(series)
    values = {m.key: m.value for m in output.measurements}
    assert values["measured_frame"] == phantom.best_frame + 1
    assert values["head_circumference_mm"] == pytest.approx(phantom.truth.hc_mm, abs=2.0)
    seg_path = tmp_path / "seg.dcm"
    write_seg(series, output, SPEC, seg_path)
    seg = pydicom.dcmread(seg_path)
    source = (
        seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    )
    assert source.ReferencedFrameNumber == phantom.best_frame + 1
    assert source.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"
    assert dciodvfy_errors(seg_path) == []


def test_uncalibrated_us_gives_pixels_and_a_warning(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phantom = write_us_phantom(tmp_path / "nocal.dcm", 200012, calibrated=False)
    output = model.predict(load_series([phantom.path]))
    keys = {m.key for m in output.measurements}
    assert "head_circumference_px" in keys and "head_circumference_mm" not in keys
    assert "gestational_age_days" not in keys
    assert "cephalic_index" not in keys, "a ratio needs the pixels' true aspect"
    assert any("no calibration" in w for w in output.warnings)


def test_single_frame_seg_is_valid(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phantom = write_us_phantom(tmp_path / "us.dcm", 200013)
    series = load_series([phantom.path])
    seg_path = tmp_path / "seg.dcm"
    write_seg(series, model.predict(series), SPEC, seg_path)
    seg = pydicom.dcmread(seg_path)
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "69536005"
    assert "FrameOfReferenceUID" not in seg
    assert dciodvfy_errors(seg_path) == []


def test_a_frame_without_a_head_is_no_finding(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phantom = write_us_phantom(tmp_path / "us.dcm", 200014)
    ds = pydicom.dcmread(phantom.path)
    ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.uint8).tobytes()
    ds.save_as(phantom.path)
    with pytest.raises(NothingFoundError, match="no fetal head"):
        model.predict(load_series([phantom.path]))


def test_routing_of_obstetric_ultrasound() -> None:
    assert accepts(SeriesTags.of("US", series_description="OB Fetal head biometry"))
    assert accepts(SeriesTags.of("US", series_description="HC/BPD"))
    assert not accepts(SeriesTags.of("US", series_description="Liver lobe"))  # not "OB"
    assert not accepts(SeriesTags.of("MR", series_description="fetal brain"))
    spec = route(SeriesTags.of("US", series_description="OB 2nd trimester"))
    assert spec is not None and spec.queue == "gpu"


def _tiny_schedule(folds: int, ensemble: bool) -> Schedule:
    plan = Plan("cpu", 32, 48, folds, ensemble, False, "epoch", 1, 1, 4, 1.0)
    return Schedule(plan, length=1, run_seconds=float("inf"), budget_seconds=float("inf"), why="")


def test_training_writes_a_loadable_checkpoint_with_its_split_and_gate(tmp_path: Path) -> None:
    from worker.models.fetal_head.frames import from_folder
    from worker.models.fetal_head.train import Recipe, train_fetal_head

    write_hc18_layout(tmp_path / "data", range(300000, 300012))
    frames = from_folder(tmp_path / "data", (32, 48))
    recipe = Recipe(base=4, depth=2, warmup=0.5)
    meta = train_fetal_head(frames, tmp_path / "ckpt.pt", _tiny_schedule(1, False), "cpu",
                            recipe=recipe)  # fmt: skip
    assert meta["sha256"] == checkpoint.sha256_of(tmp_path / "ckpt.pt")
    stored = json.loads((tmp_path / "ckpt.json").read_text())
    split = stored["split"]
    assert split["train_frames"] + split["tune_frames"] + split["test_frames"] == 12
    assert len(split["test_subjects"]) == split["test_frames"]  # one frame per phantom subject
    assert set(stored["quality_gate"]) >= {"min_ellipse_iou", "fitted_on"}
    assert "flip_tta" in stored["config"] and stored["version"] == SPEC.version
    assert stored["config"]["arch"] == "unet" and len(stored["folds"]) == 1
    held = stored["held_out_at_training"]  # the held-out frames, scored once at the end
    assert held["frames"] == split["test_frames"]
    assert held["weights_sha256"] == meta["sha256"]
    predictor = FetalHeadPredictor(tmp_path / "ckpt.pt", "cpu")
    assert predictor.input_size == (32, 48)


def test_folds_train_an_ensemble_scored_out_of_fold(tmp_path: Path) -> None:
    from worker.models.fetal_head.frames import TEST, from_folder
    from worker.models.fetal_head.train import Recipe, folds_of, train_fetal_head

    write_hc18_layout(tmp_path / "data", range(300100, 300115))
    frames = from_folder(tmp_path / "data", (32, 48))
    runs = folds_of(frames, 3, seed=0)
    tuned = sorted(i for _, tune in runs for i in tune)
    assert tuned == frames.where(0, 1)  # every frame not held out is tuned on exactly once
    assert not set(tuned) & set(frames.where(TEST))
    for train, tune in runs:
        assert not {frames.subjects[i] for i in train} & {frames.subjects[i] for i in tune}
    recipe = Recipe(base=4, depth=2, warmup=0.5)
    out = tmp_path / "ensemble.pt"
    meta = train_fetal_head(frames, out, _tiny_schedule(3, True), "cpu", recipe=recipe,
                            max_members=2)  # fmt: skip
    assert [f["fold"] for f in meta["folds"]] == [1, 2, 3]
    assert meta["out_of_fold"]["frames"] == len(tuned)
    members = meta["ensemble"]["members"]
    assert 1 <= len(members) <= 2
    config = json.loads(out.with_suffix(".json").read_text())["config"]
    assert config["arch"] == ("unet-ensemble" if len(members) > 1 else "unet")
    (result,) = FetalHeadPredictor(out, "cpu").predict([np.zeros((60, 90), np.uint8)])
    assert result.mask.shape == (60, 90)  # the ensemble serves like one U-Net


def test_a_frame_the_gate_refuses_keeps_its_sizes_but_gives_no_age(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    phantom = write_us_phantom(tmp_path / "us.dcm", 31)  # the network is unsure of this one
    output = model.predict(load_series([phantom.path]))
    assert output.review and "low confidence" in output.review[0]
    keys = {m.key for m in output.measurements}
    assert "head_circumference_mm" in keys and "gestational_age_days" not in keys
    assert any("gestational age withheld" in w for w in output.warnings)
    assert output.extras["quality"] is not None


def _train_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *flags: str
) -> tuple[argparse.Namespace, str]:
    """``medseg train fetal-head`` on 12 small phantom frames with ``flags``, to m.pt."""
    from worker.models._nn.train_args import add_train_arguments
    from worker.models.fetal_head.train import command

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_hc18_layout(tmp_path / "data", range(300200, 300212))
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(
        ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.pt"), *flags]
    )
    args.device = "cpu"
    return args, command(args, lambda stage, done, total: None)


def test_the_train_command_takes_an_input_size_and_a_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.models.fetal_head.train import command

    flags = ("--input-size", "32x48", "--depth", "3", "--folds", "1", "--epochs", "1")
    args, summary = _train_command(tmp_path, monkeypatch, *flags)
    config = json.loads((tmp_path / "m.json").read_text())["config"]
    assert (config["input_rows"], config["input_cols"], config["depth"]) == (32, 48, 3)
    assert "32x48" in summary
    assert FetalHeadPredictor(tmp_path / "m.pt", "cpu").input_size == (32, 48)
    args.input_size, args.depth = (336, 496), None  # 5 poolings need multiples of 32
    with pytest.raises(ValueError, match="multiple of 32"):
        command(args, lambda stage, done, total: None)


def test_the_train_command_ships_the_ensemble_of_several_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = ("--input-size", "32x48", "--depth", "3", "--seeds", "2", "--epochs", "1")
    _, summary = _train_command(tmp_path, monkeypatch, *flags)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert (meta["config"]["arch"], meta["config"]["members"]) == ("unet-ensemble", 2)
    assert [(f["fold"], f["seed"]) for f in meta["folds"]] == [(1, 0), (1, 1)]
    assert meta["folds"][0]["tune_frames"] == meta["folds"][1]["tune_frames"]  # one split
    assert meta["ensemble"]["rule"].startswith("runs of seeds 0-1 by their HC error")
    assert "the median run's" in meta["ensemble"]["rule"]
    assert meta["schedule"]["seeds"] == 2 and "2 seeds" in summary
    # the tuning frames are measured once, by the ensemble, for the gate
    assert meta["out_of_fold"]["frames"] == meta["folds"][0]["tune_frames"]
    assert FetalHeadPredictor(tmp_path / "m.pt", "cpu").input_size == (32, 48)


def test_the_depth_follows_the_input_size() -> None:
    from worker.models._nn.unet import view_pixels
    from worker.models.fetal_head.train import depth_for

    assert (view_pixels(4), view_pixels(5)) == (188, 380)
    assert depth_for((160, 240)) == 4  # the 2.0.0 network
    assert depth_for((320, 480)) == 5  # the GPU plan's input
    assert depth_for((32, 48)) == 4  # never below the 2.0.0 network's


def test_a_views_size_is_what_back_propagation_reaches() -> None:
    import torch

    from worker.models._nn.unet import UNet, view_pixels

    torch.manual_seed(0)
    net = UNet(base=2, depth=3).double().eval()
    x = torch.randn(1, 1, 128, 128, dtype=torch.double, requires_grad=True)
    net(x)[0, 0, 64, 64].backward()
    assert x.grad is not None
    reached = (x.grad[0, 0].abs() > 0).nonzero()
    span = int(reached[:, 0].max() - reached[:, 0].min()) + 1
    assert span == view_pixels(3) == 92
