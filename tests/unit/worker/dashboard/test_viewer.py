"""The study page's viewer through the app: scrolling, window presets, bounds, the legend
beside the image, clinical formatting, the viewer link and our own script."""

from __future__ import annotations

import logging
import re

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from db.models import Job
from tests.unit.worker.dashboard.test_app import World, _login, client, world
from worker.dashboard.app import create_app
from worker.dashboard.overlay import LEGEND_WIDTH
from worker.dashboard.palette import STRUCTURES

__all__ = ["client", "world"]  # the fixtures, shared with test_app


def _image(client: TestClient, url: str) -> np.ndarray:
    response = client.get(url)
    assert response.status_code == 200, response.text
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _count(image: np.ndarray, name: str) -> int:
    bgr = next(s.bgr for s in STRUCTURES if s.name == name)
    return int(np.all(np.abs(image.astype(int) - bgr) <= 40, axis=2).sum())


def test_scrolling_gives_each_slice_its_own_image(client: TestClient, world: World) -> None:
    _login(client)
    job = world.filled.ct_job  # 8 slices
    shown = {n: _image(client, f"/jobs/{job}/overlay.png?slice={n}") for n in (1, 4, 8)}
    assert not np.array_equal(shown[1], shown[4]) and not np.array_equal(shown[4], shown[8])
    # 512 across; under the image, the band naming each component with its status.
    assert all(image.shape[1:] == (512, 3) and image.shape[0] > 512 for image in shown.values())
    default = _image(client, f"/jobs/{job}/overlay.png")
    assert np.array_equal(default, _image(client, f"/jobs/{job}/overlay.png?slice=5"))


def test_bad_positions_and_windows_are_client_errors(client: TestClient, world: World) -> None:
    _login(client)
    ct, us = world.filled.ct_job, world.filled.us_job
    for url, status, words in (
        (f"/jobs/{ct}/overlay.png?slice=9", 404, "has no slice 9 (1-8)"),
        (f"/jobs/{ct}/overlay.png?slice=0", 400, "start at 1"),
        (f"/jobs/{ct}/overlay.png?slice=-3", 400, "start at 1"),
        (f"/jobs/{us}/overlay.png?slice=4", 404, "has no frame 4 (1-3)"),
        (f"/jobs/{ct}/overlay.png?slice=two", 422, "slice"),
        (f"/jobs/{ct}/overlay.png?window=soft", 400, "no window &#39;soft&#39; for CT"),
        (f"/jobs/{us}/overlay.png?window=lung", 400, "for US: file, auto"),
    ):
        response = client.get(url)
        assert response.status_code == status, url
        assert words in response.text, (url, response.text)
    assert client.get(f"/jobs/{us}/overlay.png?slice=3").status_code == 200


def test_window_presets_change_the_grey_levels_not_the_contours(
    client: TestClient, world: World
) -> None:
    _login(client)
    job = world.filled.ct_job
    lung = _image(client, f"/jobs/{job}/overlay.png?window=lung")
    soft = _image(client, f"/jobs/{job}/overlay.png?window=mediastinum")
    assert not np.array_equal(lung, soft)
    # The same contour; only its anti-aliased edge blends with a different grey.
    assert _count(lung, "Left lung") > 300
    assert abs(_count(lung, "Left lung") - _count(soft, "Left lung")) < 0.1 * _count(
        lung, "Left lung"
    )


def test_lungs_keep_their_colours_and_sides(client: TestClient, world: World) -> None:
    _login(client)
    image = _image(client, f"/jobs/{world.filled.ct_job}/overlay.png")
    half = image.shape[1] // 2
    # Axial CT as displayed: the patient's right lung on the image left.
    assert (
        _count(image[:, :half], "Right lung") > 300 and _count(image[:, half:], "Right lung") == 0
    )
    assert _count(image[:, half:], "Left lung") > 300 and _count(image[:, :half], "Left lung") == 0


def test_the_legend_margin_is_beside_the_image(client: TestClient, world: World) -> None:
    _login(client)
    job = world.filled.ct_job
    plain = _image(client, f"/jobs/{job}/overlay.png")
    framed = _image(client, f"/jobs/{job}/overlay.png?legend=true")
    assert framed.shape == (plain.shape[0], 512 + LEGEND_WIDTH, 3)
    assert np.array_equal(framed[:, :512], plain), "nothing of the legend on the image"
    assert _count(framed[:, 512:], "Left lung") > 10 and _count(framed[:, 512:], "Right lung") > 10


def test_the_study_page_has_the_viewer_legend_and_readable_numbers(
    client: TestClient, world: World
) -> None:
    _login(client)
    with world.session_factory() as session:
        study_id = session.get_one(Job, world.filled.us_job).series.study_id
        ct_study = session.get_one(Job, world.filled.ct_job).series.study_id
    html = client.get(f"/studies/{study_id}").text
    job = world.filled.us_job
    assert f'data-job="{job}" data-positions="3" data-kind="frame"' in html
    assert re.search(rf'id="overlay-{job}"', html) and 'src="/static/viewer.js"' in html
    legend = html[html.index(f'id="legend-{job}"') :]
    assert "Fetal head" in legend and "#ffff00" in legend
    assert "orientation unknown" in legend, "no R/L guessed for ultrasound"
    assert re.search(r"Gestational age \(Hadlock 1984 HC\)</td><td class=\"value\">\d+w\dd<", html)
    # ... with the formula's +/-2 SD for that HC (weeks).
    assert re.search(
        r"Gestational age ± \(2 SD, Hadlock 1984 HC\)</td><td class=\"value\">[123]\.\d+ wk<", html
    )
    assert re.search(r"Head circumference</td><td class=\"value\">\d+\.\d mm<", html)
    assert re.search(r"Measured frame number</td><td class=\"value\">\d+<", html)
    # The head's shape with the normal range it is read against (Hadlock 1981).
    assert re.search(
        r"Cephalic index \(BPD/OFD x 100; normal 74-83\)</td><td class=\"value\">\d+\.\d<", html
    )
    assert "{frame}" not in html and " d<" not in html
    ct_html = client.get(f"/studies/{ct_study}").text
    ct = world.filled.ct_job
    assert 'data-positions="8" data-kind="slice"' in ct_html
    assert f'id="window-{ct}"' in ct_html and "mediastinum W350/L50" in ct_html
    assert "image left R, right L, top A, bottom P" in ct_html
    assert re.search(r"Lung volume</td><td class=\"value\">\d+\.\d mL<", ct_html)
    assert "open in viewer" not in ct_html, "no link without a template"


def test_the_viewer_link_when_a_template_is_set(world: World) -> None:
    settings = world.settings.model_copy(
        update={"viewer_url_template": "https://pacs.example/viewer?study={study_uid}"}
    )
    client = TestClient(create_app(settings, world.session_factory, world.redis, None))
    _login(client)
    with world.session_factory() as session:
        series = session.get_one(Job, world.filled.ct_job).series
        study_id, study_uid = series.study_id, series.study.study_instance_uid
    html = client.get(f"/studies/{study_id}").text
    assert f'href="https://pacs.example/viewer?study={study_uid}"' in html
    assert 'rel="noopener noreferrer"' in html


def test_our_script_is_served_and_allowed(client: TestClient) -> None:
    assert client.get("/static/viewer.js").status_code == 303, "behind the login"
    _login(client)
    response = client.get("/static/viewer.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "overlay.png?" in response.text and "http" not in response.text


def test_a_purged_slice_is_said_not_guessed(client: TestClient, world: World) -> None:
    from worker.dashboard.overlay_source import load_job

    _login(client)
    job = world.filled.ct_job
    source = load_job(world.session_factory, job)
    assert source is not None
    path = source.positions[0].path
    hidden = path.with_suffix(".purged")
    path.rename(hidden)  # what retention does to an input file
    try:
        image = _image(client, f"/jobs/{job}/overlay.png?slice=1")
        assert image.shape[1:] == (512, 3)
        white = np.all(image[:512] >= 250, axis=2)
        assert white.sum() == 0, "black, and no orientation markers without the file"
        with world.session_factory() as session:
            study_id = session.get_one(Job, job).series.study_id
        assert "orientation: image left R" in client.get(f"/studies/{study_id}").text
    finally:
        hidden.rename(path)


def test_an_unreadable_seg_leaves_the_page_standing(
    client: TestClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.dashboard.overlay_source import load_job

    _login(client)
    job = world.filled.us_job
    source = load_job(world.session_factory, job)
    assert source is not None
    saved = source.seg_path.read_bytes()
    source.seg_path.write_bytes(b"not a DICOM file")
    try:
        with world.session_factory() as session:
            study_id = session.get_one(Job, job).series.study_id
        with caplog.at_level(logging.WARNING, logger="worker.dashboard.viewer"):
            page = client.get(f"/studies/{study_id}")
        assert page.status_code == 200
        assert f'id="legend-{job}"' in page.text and f'data-job="{job}"' not in page.text
        assert re.search(
            r"Gestational age \(Hadlock 1984 HC\)</td><td class=\"value\">\d+w\dd<", page.text
        )
        assert f"job {job}: overlay unreadable" in caplog.text
    finally:
        source.seg_path.write_bytes(saved)
