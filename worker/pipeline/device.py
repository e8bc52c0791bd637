"""Pick the compute device: CUDA when present and asked for (or auto), else CPU."""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    if importlib.util.find_spec("torch") is None:
        if requested.startswith("cuda"):
            logger.warning("device %s requested but PyTorch is not installed; using cpu", requested)
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda" if requested == "auto" else requested
    if requested.startswith("cuda"):
        logger.warning("device %s requested but CUDA is not available; using cpu", requested)
    return "cpu"
