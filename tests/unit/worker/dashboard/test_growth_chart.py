"""The HC growth chart (issue 31, items 3 and 5): the INTERGROWTH-21st centile curves as
the standard publishes them, the measured point on them, as PNG on the study page and PDF."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from db.models import Job, Measurement
from tests.unit.worker.dashboard.test_app import World, _login, client, world
from worker.dashboard.growth_chart import ChartPoint, centile_curves, hc_chart

__all__ = ["client", "world"]  # the fixtures, shared with test_app

#: INTERGROWTH-21st HC z-score table (mm): week -> (-2 SD, -1 SD, median, +1 SD, +2 SD).
PUBLISHED_HC = {
    14: (86.7, 92.3, 97.9, 103.5, 109.0),
    22: (180.5, 188.4, 196.3, 204.2, 212.1),
    30: (259.9, 269.1, 278.4, 287.6, 296.9),
    40: (308.1, 321.0, 333.9, 346.9, 359.8),
}


def test_the_curves_are_the_standards() -> None:
    weeks, curves = centile_curves()
    for week, (minus2, minus1, median, plus1, plus2) in PUBLISHED_HC.items():
        at = int(np.argmin(np.abs(weeks - week)))
        assert curves[50][at] == pytest.approx(median, abs=0.1)
        # 3rd and 97th: z -1.88 and +1.88, between the 1 and 2 SD columns; 10th/90th: 1.28.
        assert minus2 < curves[3][at] < minus1 and plus1 < curves[97][at] < plus2
        assert minus2 < curves[10][at] < minus1 + (median - minus1) / 2
        assert plus1 - (plus1 - median) / 2 < curves[90][at] < plus2


def test_the_measured_point_is_on_the_chart(tmp_path: object) -> None:
    png = hc_chart(ChartPoint(hc_mm=219.1, ga_days=168.0))
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    red = (image[..., 2] > 180) & (image[..., 1] < 60) & (image[..., 0] < 60)
    assert red.sum() > 30, "the point"
    assert hc_chart(ChartPoint(219.1, 168.0), "pdf").startswith(b"%PDF")


def test_the_study_page_shows_the_chart_when_the_dates_are_known(
    client: TestClient, world: World
) -> None:
    _login(client)
    job = world.filled.us_job
    with world.session_factory() as session:
        study_id = session.get_one(Job, job).series.study_id
    assert client.get(f"/jobs/{job}/growth.png").status_code == 404, "no GA by dates"
    assert f'id="growth-{job}"' not in client.get(f"/studies/{study_id}").text
    added = [
        ("gestational_age_by_dates_days", "Gestational age by dates (LMP)", 168.0, "d"),
        ("head_circumference_centile", "HC centile (INTERGROWTH-21st)", 50.0, "{centile}"),
    ]
    with world.session_factory.begin() as session:
        result = session.get_one(Job, job).results[-1]
        rows = [Measurement(key=k, label=lb, value=v, unit=u) for k, lb, v, u in added]
        result.measurements.extend(rows)
    try:
        response = client.get(f"/jobs/{job}/growth.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        pdf = client.get(f"/jobs/{job}/growth.pdf")
        assert pdf.headers["content-type"] == "application/pdf"
        assert client.get(f"/jobs/{job}/growth.svg").status_code == 404
        page = client.get(f"/studies/{study_id}").text
        assert f'id="growth-{job}"' in page and f'href="/jobs/{job}/growth.pdf"' in page
        assert "HC centile (INTERGROWTH-21st)" in page and ">50th centile<" in page
    finally:
        with world.session_factory.begin() as session:
            result = session.get_one(Job, job).results[-1]
            for m in list(result.measurements):
                if m.key in {k for k, *_ in added}:
                    session.delete(m)
