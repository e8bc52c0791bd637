"""The DICOM tags a series is routed by (both roles read them: the gateway from its rows,
the worker from the files)."""

from __future__ import annotations

from dataclasses import dataclass


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
