"""The memory layout of 2D convolution tensors per device.

On a CPU, PyTorch's oneDNN convolutions run faster on channels-last tensors (NHWC) than on
the default NCHW: measured for these U-Nets on the 2-core AMD EPYC, inference 1.4-1.7x
(docs/performance.md) and a training step 1.2-1.7x depending on the input size
(``benchmarks/training_cpu.py`` prints the ratio on the day's machine), and a training step of
the fetal brain's 3D localiser about 1.9x (``channels_last_3d``). On CUDA the default
layout is kept until it is measured there. The layout changes how the arithmetic is ordered,
not what is computed: results agree to float rounding.
"""

from __future__ import annotations

import torch


def memory_format(device: str | torch.device, *, volumetric: bool = False) -> torch.memory_format:
    """Channels-last on a CPU (``channels_last_3d`` for 3D convolutions), the default layout
    elsewhere."""
    if torch.device(device).type != "cpu":
        return torch.contiguous_format
    return torch.channels_last_3d if volumetric else torch.channels_last


def in_layout(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """A 4D (5D for ``channels_last_3d``) batch in ``fmt`` (no copy when it already is)."""
    return x.contiguous(memory_format=fmt)
