"""The overlay's parts on their own: palette, window presets, HC calipers, legend margin,
the viewer link template."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from pydicom import Dataset

from worker.core.settings import Settings
from worker.core.viewer_link import check_template, viewer_url
from worker.dashboard.calipers import head_calipers
from worker.dashboard.overlay import LEGEND_WIDTH, add_legend, draw_overlay
from worker.dashboard.overlay_source import SegSegment
from worker.dashboard.palette import OTHER_BGR, STRUCTURES, structure_colour
from worker.dashboard.windowing import BONE, LUNG, MEDIASTINUM, apply_window, presets_for
from worker.export.outputs import FETAL_BRAIN, FETAL_HEAD, LEFT_LUNG, RIGHT_LUNG


def test_a_structure_has_one_colour_whatever_its_segment_number() -> None:
    right = RIGHT_LUNG.property_type.value
    # The CT model writes the right lung as segment 2, the radiograph model as segment 1.
    assert structure_colour(right, "Right lung", 2) == structure_colour(right, "Right lung", 1)
    left = LEFT_LUNG.property_type.value
    assert structure_colour(left, "Left lung", 1) == structure_colour(left, "Left lung", 2)
    assert structure_colour(right, "Right lung", 1) != structure_colour(left, "Left lung", 1)
    # Known by label when the code is missing; unknown structures by number, apart from all.
    assert structure_colour(None, "right lung", 5) == structure_colour(right, "", 1)
    assert structure_colour("123", "Liver", 1) == OTHER_BGR[0]
    assert not {s.bgr for s in STRUCTURES} & set(OTHER_BGR)


def test_every_segment_kind_we_write_has_its_own_colour() -> None:
    kinds = (LEFT_LUNG, RIGHT_LUNG, FETAL_HEAD, FETAL_BRAIN)
    colours = {structure_colour(k.property_type.value, k.label, 1) for k in kinds}
    assert len(colours) == len(kinds)
    assert all(c not in OTHER_BGR for c in colours)


def _ct(hu: np.ndarray) -> tuple[Dataset, np.ndarray]:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds, hu.astype(np.float64)


def test_ct_window_presets_map_hounsfield_units() -> None:
    ds, hu = _ct(np.array([[-1000.0, -600.0, 50.0, 500.0, 1500.0]]))
    assert [p.name for p in presets_for("CT")][:3] == ["lung", "mediastinum", "bone"]
    assert presets_for("ct")[0] is LUNG, "lung is the CT default"
    assert presets_for("MR")[0].name == "auto"
    assert apply_window(ds, hu, LUNG).tolist() == [[59, 127, 238, 255, 255]]
    assert apply_window(ds, hu, MEDIASTINUM).tolist()[0][:3] == [0, 0, 127]
    assert apply_window(ds, hu, BONE).tolist()[0][3] == 127
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert apply_window(ds, hu, LUNG).tolist() == [[196, 128, 17, 0, 0]]


def test_mr_auto_window_stretches_percentiles() -> None:
    ds, values = _ct(np.linspace(0, 4000, 10_000).reshape(100, 100))
    grey = apply_window(ds, values, presets_for("MR")[0])
    assert grey.min() == 0 and grey.max() == 255 and 100 < grey.mean() < 155


def _ellipse_mask(
    shape: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int], angle: float
) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1)
    return mask


def test_head_calipers_are_the_ellipse_axes() -> None:
    mask = _ellipse_mask((200, 300), (150, 100), (80, 50), 0)
    calipers = head_calipers(mask)
    assert calipers is not None
    (x0, y0), (x1, y1) = calipers.ofd
    assert math.dist((x0, y0), (x1, y1)) == pytest.approx(2 * 80, abs=3)
    assert abs(y1 - y0) < 2, "OFD along the long (horizontal) axis"
    (u0, v0), (u1, v1) = calipers.bpd
    assert math.dist((u0, v0), (u1, v1)) == pytest.approx(2 * 50, abs=3)
    assert abs(u1 - u0) < 2, "BPD across it"
    assert (x0 + x1) / 2 == pytest.approx(150, abs=1) and (v0 + v1) / 2 == pytest.approx(100, abs=1)
    tilted = head_calipers(_ellipse_mask((300, 300), (150, 150), (90, 60), 30))
    assert tilted is not None
    (x0, y0), (x1, y1) = tilted.ofd
    assert math.degrees(math.atan2(y1 - y0, x1 - x0)) % 180 == pytest.approx(30, abs=2)
    assert head_calipers(np.zeros((50, 50), np.uint8)) is None


def test_a_fetal_head_is_drawn_as_ellipse_and_calipers() -> None:
    image = np.full((200, 300, 3), 60, np.uint8)
    mask = _ellipse_mask((200, 300), (150, 100), (80, 50), 0)
    head = SegSegment("Fetal head", FETAL_HEAD.property_type.value)
    canvas = draw_overlay(image, {1: mask}, {1: head}, max_side=300)
    from worker.dashboard.palette import BPD_BGR, OFD_BGR

    def count(bgr: tuple[int, int, int]) -> int:
        return int(np.all(canvas == np.array(bgr, np.uint8), axis=2).sum())

    assert count(structure_colour(head.code, head.label, 1)) > 300, "the HC ellipse"
    assert count(OFD_BGR) > 100 and count(BPD_BGR) > 60, "both caliper lines"


def test_the_legend_margin_leaves_the_image_untouched() -> None:
    image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    with_legend = add_legend(
        image, [("Right lung", (255, 0, 255)), ("Lung volume: 1.0 mL", (255, 255, 255))]
    )
    assert with_legend.shape == (256, 256 + LEGEND_WIDTH, 3)
    assert np.array_equal(with_legend[:, :256], image)
    assert with_legend[:, 256:].max() == 255, "the text is in the margin"
    tall = add_legend(image[:20], [(f"line {n}", (255, 255, 255)) for n in range(5)])
    assert tall.shape[0] > 20, "the margin grows when the lines need it"


def test_viewer_url_template() -> None:
    template = "https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}&s={series_uid}"
    assert check_template(template) == template
    assert viewer_url(template, "1.2.3", "1.2.3.4") == (
        "https://pacs.example/ohif/viewer?StudyInstanceUIDs=1.2.3&s=1.2.3.4"
    )
    assert viewer_url("", "1.2.3") is None
    assert viewer_url("https://v.example/{study_uid}", "a/b c") == "https://v.example/a%2Fb%20c"
    for bad, words in (
        ("ftp://pacs/{study_uid}", "http"),
        ("https://pacs/{patient_id}", "unknown placeholder"),
        ("https://pacs/{}", "unknown placeholder"),
        ("https://pacs/viewer", "needs {study_uid}"),
        ("https://pacs/{study_uid", "brace"),
    ):
        with pytest.raises(ValueError, match=words):
            check_template(bad)
    with pytest.raises(ValidationError, match="MEDSEG_VIEWER_URL_TEMPLATE"):
        Settings(viewer_url_template="https://pacs/{patient_name}")


@pytest.mark.parametrize("grey", [0, 128, 255])
def test_orientation_markers_read_on_any_background(grey: int) -> None:
    """Each letter is white on a dark halo: bright strokes and dark ones side by side, on a
    white film as on a black one (issue 31: the letters vanished on a bright radiograph)."""
    from worker.dashboard.orientation import Edges

    image = np.full((300, 300, 3), grey, np.uint8)
    canvas = draw_overlay(image, {}, {}, max_side=300, edges=Edges("R", "L", "A", "P"))
    grey_canvas = cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)
    regions = {
        "left": grey_canvas[135:165, 0:30],
        "right": grey_canvas[135:165, 270:300],
        "top": grey_canvas[0:30, 135:165],
        "bottom": grey_canvas[270:300, 135:165],
    }
    for where, region in regions.items():
        assert (region >= 240).sum() > 15, f"{where}: the letter's white strokes"
        assert (region <= 60).sum() > 40, f"{where}: its dark halo"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ((70, 100), (230, 100)),  # OFD across the middle
        ((150, 50), (150, 150)),  # BPD upright
        ((10, 100), (296, 100)),  # an end at the image's right edge
        ((150, 190), (150, 3)),  # an end at its top edge
        ((60, 160), (250, 20)),  # oblique
    ],
)
def test_a_caliper_label_sits_off_its_crosses(start: tuple[int, int], end: tuple[int, int]) -> None:
    """Issue 31: the OFD label sat on its caliper cross. It goes beyond the end, else beside
    it: on the image and clear of both crosses."""
    from worker.dashboard.calipers import CROSS_HALF, label_origin

    (width, height), _ = cv2.getTextSize("OFD", cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    x, y = label_origin(start, end, (width, height), (200, 300, 3))
    assert x >= 0 and x + width <= 300 and y - height >= 0 and y <= 200
    for cx, cy in (start, end):
        apart_x = x > cx + CROSS_HALF or x + width < cx - CROSS_HALF
        apart_y = y - height > cy + CROSS_HALF or y + 2 < cy - CROSS_HALF
        assert apart_x or apart_y, f"label at {(x, y)} on the cross at {(cx, cy)}"
    assert math.dist((x + width / 2, y - height / 2), end) < 3 * width, "near its own end"
