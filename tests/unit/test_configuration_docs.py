"""docs/configuration.md documents every Settings field, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

from worker.core.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _documented() -> set[str]:
    names: set[str] = set()
    for line in DOC.read_text().splitlines():
        if line.startswith("| `MEDSEG_"):
            first_cell = line.split(" | ")[0]
            names.update(re.findall(r"`MEDSEG_([A-Z0-9_]+)`", first_cell))
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    documented = _documented()
    assert fields - documented == set(), "add these to docs/configuration.md"
    assert documented - fields == set(), "documented but not settings"


def test_every_setting_has_a_description_or_is_self_explanatory() -> None:
    # Field descriptions show up in pydantic's error messages; the table is the reference.
    # A handful of plain numbers/titles are self-explanatory by name.
    plain = {"ae_title", "port", "completion_poll_seconds", "job_max_attempts"}
    plain |= {"job_time_limit_seconds", "delivery_max_attempts"}
    missing = [
        name
        for name, field in Settings.model_fields.items()
        if not field.description and name not in plain
    ]
    assert missing == []
