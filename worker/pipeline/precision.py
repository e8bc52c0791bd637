"""Reduced-precision inference (``MEDSEG_INFERENCE_PRECISION``): an autocast context around
a model's forward passes.

bf16 keeps fp32's range, so activations cannot overflow as in fp16; on CPUs with bf16
matrix units (Intel AMX, AVX512-BF16) and on recent GPUs it is the faster path. Outputs
differ from fp32 by a few boundary pixels (``benchmarks/gpu_inference.py`` prints the Dice
against fp32; the model tests hold every shipped model to its fp32 result). fp32, the
default, is what the shipped models were evaluated with.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

from worker.core.settings import Precision

__all__ = ["Precision", "autocast"]


def autocast(device: str, precision: Precision) -> AbstractContextManager[object]:
    """The context forward passes run in on ``device`` ("cpu", "cuda", "cuda:1")."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.split(":", maxsplit=1)[0], dtype=torch.bfloat16)
