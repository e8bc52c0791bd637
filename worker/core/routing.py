"""Route a series to a registered model by its DICOM tags.

Decided from the tags and settings alone, never from files: the gateway routes where no
weights need to be. The worker, where the weights are, runs a model's ``fallback`` when the
model says it cannot run (``worker.pipeline.run.runnable``)."""

from __future__ import annotations

import logging
from functools import lru_cache

from worker.core.registry import ModelSpec, all_specs, off_reason
from worker.core.tags import SeriesTags

logger = logging.getLogger(__name__)


#: Storage SOP classes whose names do not say "Image" but hold images.
_IMAGE_CLASSES_NOT_NAMED_SO = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume Storage
    }
)


@lru_cache(maxsize=256)
def _uid_name(uid: str) -> str:
    """pydicom's name of ``uid`` (the UID itself when unknown); pydicom is imported on first
    use only: ``medseg status`` reads routing summaries without loading it."""
    from pydicom.uid import UID

    return str(UID(uid).name)


def sop_class_name(uid: str) -> str:
    name = _uid_name(uid) if uid else ""
    return name if name and name != uid else f"SOP class {uid or '(none)'}"


def is_image_class(sop_class_uid: str) -> bool:
    """False for the storage SOP classes known not to be images (SR, presentation states,
    RT plans, waveforms, SEG, ...); True for image classes and for unknown (private) ones."""
    if not sop_class_uid:
        return True
    name = _uid_name(sop_class_uid)
    if name == sop_class_uid or sop_class_uid in _IMAGE_CLASSES_NOT_NAMED_SO:
        return True  # not in pydicom's dictionary: let the tags decide
    return "Image Storage" in name


def unrouted_reason(tags: SeriesTags) -> str:
    """Why ``route`` found no model for ``tags``: the routing summary of what is skipped."""
    if not is_image_class(tags.sop_class_uid):
        return (
            f"not an image: {sop_class_name(tags.sop_class_uid)} "
            f"(modality {tags.modality or 'none'}); medseg segments images only"
        )
    off = [reason for spec in _accepting(tags) if (reason := off_reason(spec)) is not None]
    if off:
        return "; ".join(off)
    body = tags.body_part_examined or "none"
    described = f", series description {tags.series_description!r}" * bool(tags.series_description)
    return (
        f"no model accepts modality {tags.modality or 'none'}, body part {body}{described} "
        f"({sop_class_name(tags.sop_class_uid)})"
    )


def _accepting(tags: SeriesTags) -> list[ModelSpec]:
    return [spec for spec in all_specs() if spec.accepts(tags)]


def route(tags: SeriesTags) -> ModelSpec | None:
    """The highest-priority model that accepts ``tags`` and is on (``registry.off_reason``),
    or None (never for a non-image)."""
    if not is_image_class(tags.sop_class_uid):
        logger.info("not an image (%s): not routed", tags.sop_class_uid)
        return None
    accepting = _accepting(tags)
    candidates = [spec for spec in accepting if off_reason(spec) is None]
    if not candidates:
        if accepting:
            logger.info("not routed: %s", unrouted_reason(tags))
        else:
            logger.info(
                "no model for modality=%s body_part=%s", tags.modality, tags.body_part_examined
            )
        return None
    return max(candidates, key=lambda spec: spec.priority)
