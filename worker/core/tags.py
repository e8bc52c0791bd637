"""The DICOM tags a series is routed by (both roles read them: the gateway from its rows,
the worker from the files)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class TaggedRow(Protocol):
    """What a recorded series (db.models.Series) offers routing, read-only."""

    @property
    def modality(self) -> str: ...
    @property
    def body_part_examined(self) -> str: ...
    @property
    def series_description(self) -> str: ...
    @property
    def image_type(self) -> str: ...
    @property
    def sop_class_uid(self) -> str: ...


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

    @classmethod
    def of_row(cls, row: TaggedRow) -> SeriesTags:
        """The tags of a recorded series (the gateway's row, not the files)."""
        return cls.of(
            modality=row.modality,
            body_part_examined=row.body_part_examined,
            series_description=row.series_description,
            image_type=row.image_type,
            sop_class_uid=row.sop_class_uid,
        )

    @property
    def image_type_values(self) -> tuple[str, ...]:
        return tuple(v for v in self.image_type.split("\\") if v)
