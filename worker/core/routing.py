"""Route a series to a registered model by its DICOM tags.

Decided from the tags and settings alone, never from files: the gateway routes where no
weights need to be. The worker, where the weights are, runs a model's ``fallback`` when the
model says it cannot run (``worker.pipeline.run.runnable``)."""

from __future__ import annotations

import logging

from worker.core.registry import ModelSpec, all_specs
from worker.core.tags import SeriesTags

logger = logging.getLogger(__name__)


def route(tags: SeriesTags) -> ModelSpec | None:
    """The highest-priority model that accepts ``tags``, or None."""
    candidates = [spec for spec in all_specs() if spec.accepts(tags)]
    if not candidates:
        logger.info("no model for modality=%s body_part=%s", tags.modality, tags.body_part_examined)
        return None
    return max(candidates, key=lambda spec: spec.priority)
