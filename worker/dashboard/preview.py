"""/series/ID/preview.png: the middle image of a series as received, through its modality's
first window preset: what an operator looks at before sending an unrouted or failed series
to a model by hand. No segmentation, no patient text drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker

from db.models import Series
from worker.dashboard import deps

router = APIRouter()

User = Annotated[str, Depends(deps.require_user)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]


def render_preview(session_factory: sessionmaker[Session], series_id: int, size: int) -> bytes:
    """PNG bytes of the series' middle instance (middle frame of a multi-frame one)."""
    import cv2
    import pydicom

    from worker.dashboard.overlay_source import Position, source_image
    from worker.dashboard.windowing import presets_for

    with session_factory() as session:
        series = session.get(Series, series_id)
        if series is None:
            raise HTTPException(404, f"no series {series_id}")
        instances = sorted(
            (i for i in series.instances if i.purged_at is None),
            key=lambda i: (i.instance_number is None, i.instance_number or 0, i.id),
        )
        modality = series.modality
    if not instances:
        raise HTTPException(404, f"series {series_id} has no stored instance to show")
    middle = instances[len(instances) // 2]
    path = Path(middle.path)
    if not path.is_file():
        raise HTTPException(404, f"series {series_id}: its files are gone")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    position = Position(middle.sop_instance_uid, path, frames // 2 + 1 if frames > 1 else None)
    try:
        image = source_image(
            position, presets_for(modality)[0], int(header.Rows), int(header.Columns)
        )
    except Exception as exc:  # an input no decoder reads: say so instead of a 500
        raise HTTPException(422, f"series {series_id}: its pixels cannot be shown ({exc})") from exc
    scale = min(1.0, size / max(image.shape[:2]))
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise HTTPException(500, "the preview could not be encoded")
    return bytes(png.tobytes())


@router.get("/series/{series_id}/preview.png")
def preview(user: User, factory: Factory, series_id: int, size: int = 384) -> Response:
    png = render_preview(factory, series_id, min(max(size, 64), 1024))
    return Response(png, media_type="image/png")
