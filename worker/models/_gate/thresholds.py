"""What every quality gate's signals and thresholds share: written out rounded (report.json,
metadata), and for thresholds, read from a checkpoint's ``quality_gate`` metadata (defaults
for any it does not name)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Self


class Rounded:
    """Mixin for a frozen dataclass of numbers: ``as_dict`` with values rounded to 4 places."""

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}  # type: ignore[call-overload]


class StoredThresholds(Rounded):
    """Mixin for a frozen dataclass of float thresholds."""

    @classmethod
    def from_metadata(cls, meta: dict[str, Any] | None) -> Self:
        """The thresholds a checkpoint carries; defaults for any it does not name."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: float(v) for k, v in (meta or {}).items() if k in known})
