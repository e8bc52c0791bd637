"""A compact U-Net (batch norm, padded 3x3 convolutions), sized for CPU serving, and an
ensemble of such U-Nets read as one network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def view_pixels(depth: int) -> int:
    """How many input pixels across one output pixel of a ``depth``-pooling UNet depends on
    (its receptive field, measured by back-propagation: 188 at 4 poolings, 380 at 5)."""
    return int(3 * 2 ** (depth + 2) - 4)


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``depth`` poolings, channels double per level."""

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, base: int = 16, depth: int = 4
    ) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([DoubleConv(in_channels, widths[0])])
        self.down.extend(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(depth))
        )
        self.merge = nn.ModuleList(
            DoubleConv(widths[i] * 2, widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        out: torch.Tensor = self.head(x)
        return out


class UNetEnsemble(nn.Module):
    """U-Nets of one shape (fold models) served as one network: the mean of their logits.

    A checkpoint of it is one file with one sha256 (``arch: unet-ensemble``), loaded and
    served like a single U-Net; averaging logits rather than probabilities keeps the
    predictors' sigmoid where it is.
    """

    def __init__(
        self,
        members: int,
        in_channels: int = 1,
        out_channels: int = 1,
        base: int = 16,
        depth: int = 4,
    ) -> None:
        super().__init__()
        if members < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(
            UNet(in_channels, out_channels, base, depth) for _ in range(members)
        )

    @classmethod
    def of(cls, models: Sequence[UNet], base: int, depth: int) -> UNetEnsemble:
        """An ensemble holding copies of ``models``' weights."""
        ensemble = cls(len(models), base=base, depth=depth)
        for member, model in zip(ensemble.members, models, strict=True):
            member.load_state_dict(model.state_dict())
        return ensemble

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.members[0](x)
        for member in self.members[1:]:
            logits = logits + member(x)
        out: torch.Tensor = logits / len(self.members)
        return out
