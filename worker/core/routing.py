"""Route a series to a registered model by its DICOM tags."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker.registry import ModelSpec, all_specs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesTags:
    """The tags routing looks at, normalised to upper case."""

    modality: str
    body_part_examined: str = ""
    series_description: str = ""
    image_type: str = ""
    sop_class_uid: str = ""

    @classmethod
    def of(
        cls,
        modality: str,
        body_part_examined: str = "",
        series_description: str = "",
        image_type: str = "",
        sop_class_uid: str = "",
    ) -> SeriesTags:
        return cls(
            modality=modality.strip().upper(),
            body_part_examined=body_part_examined.strip().upper(),
            series_description=series_description.strip().upper(),
            image_type=image_type.strip().upper(),
            sop_class_uid=sop_class_uid.strip(),
        )

    @property
    def image_type_values(self) -> tuple[str, ...]:
        return tuple(v for v in self.image_type.split("\\") if v)


def route(tags: SeriesTags) -> ModelSpec | None:
    """The highest-priority model that accepts ``tags``, or None."""
    candidates = [spec for spec in all_specs() if spec.accepts(tags)]
    if not candidates:
        logger.info("no model for modality=%s body_part=%s", tags.modality, tags.body_part_examined)
        return None
    return max(candidates, key=lambda spec: spec.priority)
