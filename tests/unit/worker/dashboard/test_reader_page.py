"""What a reader sees on the study page beyond the overlay (issue 31, item 6): one legend
order for the lungs on CT and on films, no slider for a single image, dates as 2026-12-01,
and what a validation badge means."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from db.models import Job
from tests.unit.worker.dashboard.test_app import World, _login, client, world
from worker.dashboard.app import TEMPLATES
from worker.dashboard.orientation import Edges
from worker.dashboard.overlay import OverlayView, _legend
from worker.dashboard.overlay_source import SegMasks, SegSegment
from worker.export.outputs import LEFT_LUNG, RIGHT_LUNG

__all__ = ["client", "world"]  # the fixtures, shared with test_app


def _lungs(right_number: int) -> SegMasks:
    left_number = 3 - right_number
    segments = {
        right_number: SegSegment("Right lung", RIGHT_LUNG.property_type.value),
        left_number: SegSegment("Left lung", LEFT_LUNG.property_type.value),
    }
    return SegMasks(segments, 4, 4)


def test_the_legend_lists_the_lungs_in_one_order_whatever_their_numbers() -> None:
    ct, film = _lungs(right_number=2), _lungs(right_number=1)  # as the two models number them
    assert [e.label for e in _legend(ct)] == ["Right lung", "Left lung"]
    assert [e.label for e in _legend(film)] == [e.label for e in _legend(ct)]


def _viewer(positions: int) -> str:
    view = OverlayView(
        positions=positions,
        position=1,
        kind="slice",
        presets=[],
        legend=[],
        edges=Edges("R", "L", "H", "F"),
        measurements=[],
        purged=False,
    )

    class _Job:
        id = 7

    return TEMPLATES.get_template("_viewer.html").render(
        viewers={7: view}, job=_Job(), result=type("R", (), {"measurements": []})()
    )


def test_a_single_image_has_no_slider() -> None:
    single, stack = _viewer(1), _viewer(8)
    assert re.search(r'<input type="range"[^>]* hidden>', single)
    assert 'id="shown-7" hidden>' in single, "no 'slice 1/1'"
    assert "slice 1/8" in stack and not re.search(r'<input type="range"[^>]* hidden>', stack)


def test_a_badge_says_what_its_status_means() -> None:
    badge = TEMPLATES.get_template("_validation.html")
    reference = badge.render(status="reference-only")
    assert 'title="reference-only: evaluated on real images, but against a reference method' in (
        reference
    )
    assert "not for clinical use" not in reference
    assert "not for clinical use" in badge.render(status="validated-synthetic")
    assert "a result older than model cards" in badge.render(status=None)


def test_the_study_date_reads_as_elsewhere(client: TestClient, world: World) -> None:
    _login(client)
    with world.session_factory.begin() as session:
        study = session.get_one(Job, world.filled.ct_job).series.study
        study_id, saved = study.id, study.study_date
        study.study_date = "20261201"
    try:
        assert "Study date 2026-12-01 ·" in client.get(f"/studies/{study_id}").text
    finally:
        with world.session_factory.begin() as session:
            session.get_one(Job, world.filled.ct_job).series.study.study_date = saved
