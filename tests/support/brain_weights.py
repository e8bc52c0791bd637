"""The shipped fetal brain weights as another checkpoint: a copy whose JSON states another
mask convention, served through ``MEDSEG_FETAL_BRAIN_WEIGHTS`` for the test's duration."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from worker.core.settings import get_settings
from worker.models._nn.checkpoint import metadata_path, update_metadata
from worker.models.fetal_brain.serve import DEFAULT_BRAIN_WEIGHTS


@contextmanager
def served_as(convention: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """1.0.0's weights, stated ``convention``, served by models loaded inside the block."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / DEFAULT_BRAIN_WEIGHTS.name
    shutil.copy(DEFAULT_BRAIN_WEIGHTS, weights)
    shutil.copy(metadata_path(DEFAULT_BRAIN_WEIGHTS), metadata_path(weights))
    update_metadata(weights, {"mask_convention": convention})
    monkeypatch.setenv("MEDSEG_FETAL_BRAIN_WEIGHTS", str(weights))
    get_settings.cache_clear()
    try:
        yield weights
    finally:
        monkeypatch.delenv("MEDSEG_FETAL_BRAIN_WEIGHTS")
        get_settings.cache_clear()
