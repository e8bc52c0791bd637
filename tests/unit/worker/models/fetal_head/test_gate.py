"""The fetal head quality gate, the subject split and the HC18 evaluation summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worker.models._nn import checkpoint
from worker.models._nn.budget import cosine_lr
from worker.models.fetal_head.biometry import Ellipse, ellipse_mask, fit_ellipse_mm
from worker.models.fetal_head.evaluate import HC_BANDS, FrameRecord, hc_at_weeks, summarise
from worker.models.fetal_head.gate import (
    DEFAULT_THRESHOLDS,
    Thresholds,
    outline_outside,
    reasons,
    signals,
)
from worker.models.fetal_head.gate_fit import BOUNDS, fit_thresholds
from worker.models.fetal_head.hc18 import HC18Item
from worker.models.fetal_head.hc18_split import subject_of, subject_split
from worker.models.fetal_head.predictor import FetalHeadPredictor, clean_mask

SHAPE = (540, 800)


def _frame(
    cx: float, cy: float, a: float, b: float, *, blobs: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A probability map: a confident ellipse, optionally with extra blobs elsewhere."""
    prob = np.where(ellipse_mask(SHAPE, (cx, cy, a, b, 20.0)), 0.97, 0.02).astype(np.float32)
    for k in range(blobs):
        prob[20 + 60 * k : 60 + 60 * k, 20:140] = 0.9
    return prob, clean_mask(prob)


def _judge(prob: np.ndarray, mask: np.ndarray, pixel_mm: float = 0.1) -> list[str]:
    spacing = (pixel_mm, pixel_mm)
    ellipse = fit_ellipse_mm(mask, spacing)
    hc = ellipse.circumference if ellipse else None
    return reasons(signals(prob, mask, ellipse, spacing), hc)


def test_a_clean_head_is_accepted() -> None:
    assert _judge(*_frame(400, 270, 200, 150)) == []


def test_a_head_cut_by_the_frame_edge_is_flagged() -> None:
    assert any("runs off the image" in r for r in _judge(*_frame(780, 270, 200, 150)))


def test_the_outline_beyond_the_image_is_measured_along_the_perimeter() -> None:
    inside = Ellipse(40.0, 27.0, 20.0, 15.0, 20.0)
    assert outline_outside(inside, SHAPE, (0.1, 0.1)) == 0.0
    # a circle centred on the left edge: half its outline beyond (pixel edges at -0.5 px)
    on_edge = Ellipse(-0.05, 27.0, 10.0, 10.0, 0.0)
    assert outline_outside(on_edge, SHAPE, (0.1, 0.1)) == pytest.approx(0.5, abs=0.01)
    # centred on the top-left corner: three quarters beyond
    corner = Ellipse(-0.05, -0.05, 10.0, 10.0, 0.0)
    assert outline_outside(corner, SHAPE, (0.1, 0.1)) == pytest.approx(0.75, abs=0.01)
    # by arc length, not by angle: a flat ellipse cut at the end of its long axis loses more
    # of its outline than of its parameter range near the cut
    flat = Ellipse(8.0, 27.0, 10.0, 3.0, 0.0)  # 2 mm of its 20 mm long axis beyond x = -0.05
    share = outline_outside(flat, SHAPE, (0.1, 0.1))
    theta = np.linspace(0, 2 * np.pi, 100000, endpoint=False)
    x = 8.0 + 10.0 * np.cos(theta)
    arc = np.hypot(10.0 * np.sin(theta), 3.0 * np.cos(theta))
    assert share == pytest.approx(arc[x < -0.05].sum() / arc.sum(), abs=0.003)


def test_a_head_leaving_the_image_is_flagged_before_its_area_says_so() -> None:
    # 9 % of this head's fitted outline lies beyond the top edge, 0.4 % of its area
    prob, mask = _frame(400, 148, 200, 150)
    spacing = (0.1, 0.1)
    found = signals(prob, mask, fit_ellipse_mm(mask, spacing), spacing)
    assert found is not None
    assert found.outline_outside > DEFAULT_THRESHOLDS.max_outline_outside
    assert found.outside_fraction <= DEFAULT_THRESHOLDS.max_outside_fraction
    verdict = _judge(prob, mask)
    assert any("head leaves the image" in r and "extrapolated" in r for r in verdict)
    assert not any("runs off the image" in r for r in verdict)
    # well inside the frame: no such reason
    assert not any("leaves the image" in r for r in _judge(*_frame(400, 270, 200, 150)))


def test_a_frame_filling_mask_is_flagged() -> None:
    prob = np.full(SHAPE, 0.9, np.float32)  # the old phantom weights' failure on real frames
    prob[:, :40] = 0.1
    why = " | ".join(_judge(prob, clean_mask(prob)))
    assert "not elliptical" in why and "implausible for the field of view" in why


def test_scattered_candidates_are_flagged() -> None:
    prob, mask = _frame(500, 300, 150, 120, blobs=3)
    assert any("more than one candidate" in r for r in _judge(prob, mask))


def test_an_unsure_network_is_flagged() -> None:
    prob, mask = _frame(400, 270, 200, 150)
    prob[mask] = 0.6
    assert any("low confidence" in r for r in _judge(prob, mask))


def test_an_implausible_hc_is_flagged_only_when_calibrated() -> None:
    prob, mask = _frame(400, 270, 200, 150)
    assert any("plausible" in r for r in _judge(prob, mask, pixel_mm=1.0))  # HC ~ 1100 mm
    ellipse = fit_ellipse_mm(mask, (1.0, 1.0))
    assert reasons(signals(prob, mask, ellipse, (1.0, 1.0)), None) == []


def test_an_uncertain_outline_is_measured_in_mm_and_flagged_when_calibrated() -> None:
    import cv2

    prob, mask = _frame(400, 270, 200, 150)
    ellipse = fit_ellipse_mm(mask, (0.1, 0.1))
    assert ellipse is not None
    sharp = signals(prob, mask, ellipse, (0.1, 0.1))
    assert sharp is not None and sharp.boundary_band_mm == 0.0
    # A step blurred by a Gaussian of sigma s crosses 0.1-0.9 over 2 x 1.2816 s.
    for sigma, flagged in ((3.0, False), (15.0, True)):
        blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
        found = signals(blurred, mask, ellipse, (0.1, 0.1))
        assert found is not None
        assert found.boundary_band_mm == pytest.approx(2 * 1.2816 * sigma * 0.1, rel=0.1)
        judged = reasons(found, ellipse.circumference)
        assert any("outline is uncertain" in r for r in judged) is flagged
        assert not any("outline is uncertain" in r for r in reasons(found, None))


def test_the_outline_band_threshold_flags_the_widest_tenth_of_tuning_frames() -> None:
    bands = [1.0 + 0.1 * k for k in range(20)]
    t = fit_thresholds([_record(0.5, boundary_band_mm=b) for b in bands])
    assert t.max_boundary_band_mm == pytest.approx(float(np.quantile(bands, 0.9)))
    # A set of razor-sharp outlines cannot make the check refuse ordinary frames.
    sharp = fit_thresholds([_record(0.5, boundary_band_mm=0.2) for _ in range(20)])
    assert sharp.max_boundary_band_mm == BOUNDS["max_boundary_band_mm"][0]


def test_no_head_is_a_reason() -> None:
    assert reasons(None, None) == ["no fetal head found"]


def test_thresholds_from_metadata_keep_defaults_for_what_is_missing() -> None:
    t = Thresholds.from_metadata({"min_ellipse_iou": 0.9, "fitted_on": "x"})
    assert t.min_ellipse_iou == 0.9
    assert t.max_outside_fraction == DEFAULT_THRESHOLDS.max_outside_fraction
    assert Thresholds.from_metadata(None) == DEFAULT_THRESHOLDS


def _record(diff: float | None, **signal: float) -> FrameRecord:
    base = {
        "ellipse_iou": 0.97,
        "outside_fraction": 0.0,
        "confidence": 0.95,
        "area_fraction": 0.2,
        "fragment_ratio": 0.0,
    }
    return FrameRecord(
        name="x.png",
        subject="001",
        pixel_mm=0.1,
        hc_reference_mm=200.0,
        hc_mm=None if diff is None else 200.0 + diff,
        dice=0.97,
        hausdorff_mm=1.0,
        signals={**base, **signal},
        review=[],
    )


def test_fitted_thresholds_stay_inside_their_bounds() -> None:
    good = [_record(0.5, ellipse_iou=0.999, confidence=0.999) for _ in range(20)]
    t = fit_thresholds(good)
    assert t.min_ellipse_iou == BOUNDS["min_ellipse_iou"][1]  # clipped, not 0.999
    assert t.min_confidence == BOUNDS["min_confidence"][1]
    assert t.max_outside_fraction == BOUNDS["max_outside_fraction"][0]
    with pytest.raises(ValueError, match="too few"):
        fit_thresholds([_record(20.0)] * 30)  # no well-measured frame


def test_summary_splits_the_error_by_the_gate_and_by_hc_band() -> None:
    flagged = FrameRecord(**{**_record(30.0).__dict__, "review": ["mask is not elliptical (x)"]})
    records = [_record(1.0), _record(-2.0), flagged, _record(None)]
    s = summarise(records)
    assert s["no_answer"] == 1
    assert s["hc_abs_diff_mm"]["mean"] == pytest.approx(11.0)
    assert s["gate"]["flagged_share"] == 0.25
    assert s["gate"]["accepted_hc_abs_diff_mm"]["mean"] == pytest.approx(1.5)
    assert s["gate"]["reasons"] == {"mask is not elliptical": 1}
    assert s["by_hc_band"]["second trimester"]["n"] == 3


def test_trimester_bands_follow_hadlock() -> None:
    assert 85 < hc_at_weeks(14) < 105  # ~ 9.7 cm at 14 weeks
    assert 250 < hc_at_weeks(28) < 265
    assert [b[0] for b in HC_BANDS] == ["first trimester", "second trimester", "third trimester"]


def test_subject_split_keeps_each_examination_on_one_side() -> None:
    items = [
        HC18Item(Path(f"{n:03d}_{k}HC.png" if k else f"{n:03d}_HC.png"), Path("a"), 0.1, 100.0)
        for n in range(50)
        for k in range(1 + n % 3)
    ]
    split = subject_split(items, 0.2, 0.1, seed=3)
    sides = [
        set(map(lambda i: subject_of(items[i]), s)) for s in (split.train, split.tune, split.test)
    ]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert len(sides[2]) == 10 and len(sides[1]) == 4
    assert sorted(split.train + split.tune + split.test) == list(range(len(items)))
    assert subject_split(items, 0.2, 0.1, seed=3) == split  # fixed by its seed


def test_learning_rate_warms_up_then_anneals_to_zero() -> None:
    assert cosine_lr(1.0, 0.1, 0.05) == pytest.approx(0.5)
    assert cosine_lr(1.0, 0.1, 0.1) == pytest.approx(1.0)
    assert cosine_lr(1.0, 0.1, 1.0) == pytest.approx(0.0, abs=1e-9)
    assert cosine_lr(1.0, 0.1, 1.5) == pytest.approx(0.0, abs=1e-9)  # past the time budget


def test_flip_tta_averages_a_frame_with_its_mirror(tmp_path: Path) -> None:
    import torch

    from worker.models._nn.unet import UNet

    torch.manual_seed(1)
    weights = tmp_path / "w.pt"
    config = {"arch": "unet", "base": 4, "depth": 2, "input_rows": 32, "input_cols": 48}
    checkpoint.save(UNet(base=4, depth=2), config, {"model": "t"}, weights)
    plain = FetalHeadPredictor(weights)
    meta = json.loads(weights.with_suffix(".json").read_text())
    meta["config"]["flip_tta"] = True
    weights.with_suffix(".json").write_text(json.dumps(meta))
    tta = FetalHeadPredictor(weights)
    x = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    (p,), (m,) = plain.forward([x]), plain.forward([np.ascontiguousarray(x[:, ::-1])])
    (t,) = tta.forward([x])
    assert np.allclose(t, (p + m[:, ::-1]) / 2, atol=1e-6)
    assert np.abs(p - m[:, ::-1]).max() > 1e-4  # the network is not mirror-symmetric


def test_a_flat_ellipse_is_not_a_fetal_head() -> None:
    """Cephalic index (BPD/OFD) 0.58, as the adult echo of issue 28: no fetal head."""
    prob, mask = _frame(400, 270, 200, 116)
    assert any(r.startswith("not a fetal head: cephalic index") for r in _judge(prob, mask))
    prob, mask = _frame(400, 270, 200, 150)  # 0.75: a head
    assert not any("cephalic" in r for r in _judge(prob, mask))


def _ring_image(rim: int, rest: int) -> np.ndarray:
    """A fan-like frame (grey ``rest`` everywhere) with the head's rim drawn at ``rim``."""
    image = np.full(SHAPE, rest, np.uint8)
    outer = ellipse_mask(SHAPE, (400, 270, 200, 150, 20.0))
    inner = ellipse_mask(SHAPE, (400, 270, 160, 120, 20.0))  # the outer fifth: the rim
    image[outer & ~inner] = rim
    image += np.random.default_rng(0).integers(0, 20, SHAPE, dtype=np.uint8)
    return image


def test_the_skull_is_a_bright_echo() -> None:
    prob, mask = _frame(400, 270, 200, 150)
    spacing = (0.1, 0.1)
    ellipse = fit_ellipse_mm(mask, spacing)
    bright = signals(prob, mask, ellipse, spacing, image=_ring_image(230, 90))
    dark = signals(prob, mask, ellipse, spacing, image=_ring_image(20, 120))
    assert bright is not None and dark is not None
    assert bright.skull_echo > 0.9 and dark.skull_echo < 0.2
    assert not any("skull echo" in r for r in reasons(bright, None))
    assert any("no bright skull echo" in r for r in reasons(dark, None))
    unseen = signals(prob, mask, ellipse, spacing)  # no image given: not judged
    assert unseen is not None and unseen.skull_echo == -1.0
    assert not any("skull echo" in r for r in reasons(unseen, None))
