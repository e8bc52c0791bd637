"""The memory layout of convolution tensors per device.

On a CPU, PyTorch's oneDNN convolutions run faster on channels-last tensors (NHWC; NDHWC for
3D) than on the default NCHW. Measured on the 2-core AMD EPYC (docs/performance.md): the
served forward passes 1.4-1.7x; a training step (``benchmarks/training_cpu.py``, which prints
the ratio on the day's machine) 1.29x for the fetal head's recipe, 1.30x for the fetal brain's
3D localiser, 1.10x for the chest film's, 1.06x for the fetal brain's 128-pixel patches and none
for the lung CT's small U-Net (0.98x). On CUDA the default layout is kept until it is
measured there. The layout changes the order of the arithmetic, not what is computed: results
agree to float rounding.
"""

from __future__ import annotations

from typing import TypeVar

import torch

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def memory_format(device: str | torch.device, *, volumetric: bool = False) -> torch.memory_format:
    """Channels-last on a CPU (``channels_last_3d`` for 3D convolutions), the default layout
    elsewhere."""
    if torch.device(device).type != "cpu":
        return torch.contiguous_format
    return torch.channels_last_3d if volumetric else torch.channels_last


def in_layout(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """A 4D (5D for ``channels_last_3d``) batch in ``fmt`` (no copy when it already is)."""
    return x.contiguous(memory_format=fmt)


def placed(model: ModuleT, device: str | torch.device, *, volumetric: bool = False) -> ModuleT:
    """``model`` on ``device`` with its weights in the device's layout (``memory_format``)."""
    return model.to(device).to(memory_format=memory_format(device, volumetric=volumetric))
