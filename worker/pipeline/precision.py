"""Reduced-precision inference (``MEDSEG_INFERENCE_PRECISION``): an autocast context around
a model's forward passes, used only where the device runs that precision natively.

bf16 keeps fp32's range, so activations cannot overflow as in fp16; on CPUs with bf16
matrix units (Intel AMX, AVX512-BF16) and on GPUs from compute capability 8.0 it is the
faster path. Elsewhere it is emulated and many times slower (a CPU without bf16 units ran a
convolution ~100x slower), so ``resolve_precision`` falls back to fp32 there and says so
once, when the worker or ``medseg process`` builds its model cache. fp16 is offered on CUDA
only. Outputs differ from fp32 by a few boundary pixels (``benchmarks/gpu_inference.py``
prints the Dice against fp32; the model tests hold every shipped model to its fp32 result).
fp32, the default, is what the shipped models were evaluated with.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager

from worker.core.settings import Precision
from worker.models._nn.hardware import bf16_native, unsupported_bf16_reason

__all__ = ["Precision", "autocast", "precision_note", "resolve_precision", "unsupported"]

logger = logging.getLogger(__name__)


def unsupported(device: str, requested: Precision) -> str | None:
    """Why ``device`` does not run ``requested`` natively; None where it does."""
    if requested == "fp32":
        return None
    if requested == "fp16":
        return None if device.startswith("cuda") else "fp16 is offered on CUDA only"
    return None if bf16_native(device) else unsupported_bf16_reason(device)


def resolve_precision(device: str, requested: Precision) -> Precision:
    """The precision forward passes on ``device`` run in: ``requested`` where the device
    runs it natively, else fp32, with a warning."""
    reason = unsupported(device, requested)
    if reason is None:
        return requested
    logger.warning(
        "MEDSEG_INFERENCE_PRECISION=%s requested, using fp32 on %s: %s",
        requested,
        device,
        reason,
    )
    return "fp32"


def precision_note(device: str, requested: Precision, used: Precision) -> str:
    """One line for a start-up log or ``medseg models``: the precision used and why."""
    if used == requested:
        return f"{used} on {device}"
    return f"{used} on {device} ({requested} requested: {unsupported(device, requested)})"


def autocast(device: str, precision: Precision) -> AbstractContextManager[object]:
    """The context forward passes run in on ``device`` ("cpu", "cuda", "cuda:1"), in
    ``precision`` as given (``resolve_precision`` decides whether to ask for it)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.split(":", maxsplit=1)[0], dtype=dtype)
