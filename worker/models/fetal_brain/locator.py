"""A coarse 3D localiser of the fetal brain: the whole stack at 64x64 pixels in plane (about
3-7 mm), every slice at once, so the network sees the head in 3D (a skull around a folded
organ with a rim of fluid) where a per-slice network sees a cross-section that the placenta
or the fetal trunk can match.

Its output, brought back to the stack's pixels, is a region: the first stage's brain is kept
only inside it (``predict.PostProcess.locator``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from worker.models._nn import checkpoint
from worker.models._nn.layout import in_layout, memory_format, placed

COARSE = 64  # in-plane pixels the localiser sees
_DEPTH_MULTIPLE = 4  # two poolings through the stack


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class Locator3d(nn.Module):
    """A 3D U-Net of four levels; the first pooling is in plane only (slices are thicker
    than the coarse pixels are wide, 2.5-8 against 3-7 mm), the next two in 3D."""

    POOLS = ((1, 2, 2), (2, 2, 2), (2, 2, 2))

    def __init__(self, base: int = 8) -> None:
        super().__init__()
        self.base = base
        widths = [base, base * 2, base * 4, base * 8]
        self.down = nn.ModuleList([_block(1, widths[0])])
        self.down.extend(_block(widths[i], widths[i + 1]) for i in range(3))
        self.up = nn.ModuleList(_block(widths[i] + widths[i + 1], widths[i]) for i in range(3))
        self.head = nn.Conv3d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (S, 1, D, H, W) for inputs (S, 1, D, H, W), D a multiple of 4."""
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool3d(x, self.POOLS[i - 1])
            x = block(x)
            skips.append(x)
        for i in reversed(range(3)):
            x = F.interpolate(x, size=skips[i].shape[2:], mode="trilinear", align_corners=False)
            x = self.up[i](torch.cat([skips[i], x], 1))
        out: torch.Tensor = self.head(x)
        return out


def coarse(stack: torch.Tensor) -> torch.Tensor:
    """Slices (..., n, rows, cols) in [0, 1] to (..., n, COARSE, COARSE) by area averaging."""
    lead, (n, rows, cols) = stack.shape[:-3], stack.shape[-3:]
    flat = stack.reshape(-1, n, rows, cols).float()
    small = F.interpolate(flat, size=(COARSE, COARSE), mode="area")
    return small.reshape(*lead, n, COARSE, COARSE)


def padded_depth(n: int) -> int:
    return -(-n // _DEPTH_MULTIPLE) * _DEPTH_MULTIPLE


def logits(model: Locator3d, volumes: torch.Tensor) -> torch.Tensor:
    """Logits (S, n, h, w) of coarse volumes (S, n, h, w) in [0, 1]: padded through the stack
    with zeros (air) to a multiple of 4 slices, then cropped back."""
    n = volumes.shape[1]
    x = F.pad((volumes - 0.25) / 0.25, (0, 0, 0, 0, 0, padded_depth(n) - n), value=-1.0)
    x = in_layout(x[:, None], memory_format(x.device, volumetric=True))
    out: torch.Tensor = model(x)[:, 0, :n]
    return out


@torch.no_grad()
def region_probability(model: Locator3d, stack: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The brain's probability at every pixel of a stack (n, rows, cols) of the service's
    8-bit scaling: the coarse prediction, averaged with its left-right flip, resized back."""
    model.eval()
    device = next(model.parameters()).device
    x = coarse(torch.from_numpy(np.asarray(stack)).to(device)[None].float() / 255)
    prob = torch.sigmoid(logits(model, x))
    prob = (prob + torch.sigmoid(logits(model, x.flip(-1))).flip(-1)) / 2
    full = F.interpolate(prob, size=stack.shape[1:], mode="bilinear", align_corners=False)
    result: npt.NDArray[np.float32] = full[0].cpu().numpy().astype(np.float32)
    return result


def load(weights: Path, device: str = "cpu") -> tuple[Locator3d, dict[str, Any]]:
    """A localiser checkpoint (``train_locator.save``), its sha256 checked against its
    metadata as every checkpoint's is."""
    config, state, meta = checkpoint.verified(weights)
    if config.get("arch") != "locator3d":
        raise checkpoint.CheckpointError(f"{weights}: not a locator3d checkpoint")
    model = Locator3d(int(config["base"]))
    model.load_state_dict(state)
    model = placed(model.eval(), device, volumetric=True)
    return model, meta
