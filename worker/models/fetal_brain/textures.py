"""Real anatomy as texture for the synthetic mother, fetal trunk and placenta (``synth.py``).

Six sessions of hand-made label blobs (organs, walls, bowel loops, a lumbar spine) have not
taught the first stage what a real abdomen is: it still marks maternal organs, bowel and the
fetal trunk at a brain's confidence. This module puts real anatomy there instead. Real CT
volumes (the two chest CTs of the pyradiomics source package: ribs, spine, lungs, heart,
vessels, the liver's dome, muscle and fat) are placed at any angle and scale, and drawn
through a random intensity curve per stack, MR-like (fat and fluid bright, muscle and bone
dark, air black) or in any order, so that real organ shapes, boundaries and textures, in a
contrast the network cannot key on, replace the blobs in a share of stacks. Scaled down to a
quarter or a third, the same volumes give the fetal trunk a spine, ribs and organs.

CT stands in for shape and texture only: its grey levels never reach the network unmapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from worker.models.lung_ct.volume import read_nrrd

_HU_LOW, _HU_HIGH = -1024.0, 2048.0
_TISSUE_HU = -400.0
# The intensity curve's knots (HU): air, lung, lung edges, fat, water, soft tissue, liver and
# contrast, bone, dense bone.
_KNOTS_HU = (-1024, -900, -600, -200, -80, 0, 40, 80, 200, 500, 1200, 2048)
# MR-like (single-shot T2) ranges per knot, in the synthesis' [0, 1] signal.
_MR_LIKE = (
    (0.00, 0.05),
    (0.00, 0.10),
    (0.00, 0.25),
    (0.30, 0.90),
    (0.60, 1.00),
    (0.70, 1.00),
    (0.10, 0.40),
    (0.15, 0.50),
    (0.10, 0.45),
    (0.02, 0.30),
    (0.00, 0.20),
    (0.00, 0.20),
)


def _normalised(hu: torch.Tensor) -> torch.Tensor:
    return ((hu - _HU_LOW) / (_HU_HIGH - _HU_LOW)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Placement:
    """Where a texture volume lies for each stack of a batch."""

    volume: torch.Tensor  # (S,) index into the bank
    rotation: torch.Tensor  # (S, 3, 3)
    scale: torch.Tensor  # (S,) texture mm per scene mm is 1 / scale
    offset: torch.Tensor  # (S, 3) mm, in the volume's frame


class TextureBank:
    """CT volumes on a device, (1, 1, D, H, W) in [0, 1] ((HU + 1024) / 3072; air is 0, so
    sampling beyond a volume's edge gives air)."""

    def __init__(self, volumes: list[np.ndarray], spacings: list[np.ndarray], device: str) -> None:
        self.device = torch.device(device)
        self.volumes = [
            _normalised(torch.from_numpy(v.astype(np.float32)).to(self.device))[None, None]
            for v in volumes
        ]
        # Half extents as (x, y, z) = (columns, rows, slices), grid_sample's order.
        self.half_mm = [
            torch.tensor(
                [v.shape[2] * s[2] / 2, v.shape[1] * s[1] / 2, v.shape[0] * s[0] / 2],
                device=self.device,
            )
            for v, s in zip(volumes, spacings, strict=True)
        ]
        self.knots = _normalised(torch.tensor(_KNOTS_HU, dtype=torch.float32, device=self.device))
        self.mr_like = torch.tensor(_MR_LIKE, device=self.device)
        self.tissue_threshold = float(_normalised(torch.tensor(_TISSUE_HU)))

    def __len__(self) -> int:
        return len(self.volumes)

    def place(
        self,
        gen: torch.Generator,
        stacks: int,
        scale: tuple[float, float],
        rotations: torch.Tensor,
    ) -> Placement:
        """A volume, a turn, a scale and an offset (within a third of the volume's half
        extents) per stack."""
        dev = gen.device
        volume = torch.randint(0, len(self), (stacks,), generator=gen, device=dev)
        lo, hi = scale
        factor = lo + (hi - lo) * torch.rand(stacks, generator=gen, device=dev)
        half = torch.stack([self.half_mm[int(i)] for i in volume.tolist()])
        offset = (torch.rand(stacks, 3, generator=gen, device=dev) * 2 - 1) * half / 3
        return Placement(volume, rotations, factor, offset)

    def sample(
        self, points: torch.Tensor, centre: torch.Tensor, placed: Placement, mask: torch.Tensor
    ) -> torch.Tensor:
        """Texture values (S, P) in [0, 1] at the scene points (S, P, 3) mm where ``mask``
        (S, P) is set (0 elsewhere), the volume centred on ``centre`` (S, 3): trilinear, one
        stack at a time and only at the masked points (a 3D sample of every point of a
        batch doubled the synthesis' time)."""
        out = torch.zeros(mask.shape, device=points.device)
        for s, i in enumerate(placed.volume.tolist()):
            at = mask[s].nonzero()[:, 0]
            if len(at) == 0:
                continue
            local = (points[s, at] - centre[s]) @ placed.rotation[s] / placed.scale[s]
            grid = ((local + placed.offset[s]) / self.half_mm[i])[None, None, None]
            value = F.grid_sample(
                self.volumes[i], grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            out[s, at] = value[0, 0, 0, 0]
        return out

    def tissue(self, values: torch.Tensor) -> torch.Tensor:
        """Where sampled values are a body's tissue, not air or lung (above -400 HU): only
        there does a CT stand in for the abdomen of a pregnant woman; beyond its body and in
        its lungs the synthetic labels stay."""
        return values > self.tissue_threshold

    def curve(
        self, gen: torch.Generator, values: torch.Tensor, mr_like: torch.Tensor
    ) -> torch.Tensor:
        """``values`` (S, P) through a random piecewise-linear curve per stack: MR-like where
        ``mr_like`` (S,) is set, any order elsewhere."""
        stacks, dev = values.shape[0], values.device
        knots = len(self.knots)
        u = torch.rand(stacks, knots, generator=gen, device=dev)
        prior = self.mr_like
        ordered = prior[:, 0] + (prior[:, 1] - prior[:, 0]) * u
        anything = torch.rand(stacks, knots, generator=gen, device=dev)
        levels = torch.where(mr_like[:, None], ordered, anything)  # (S, K)
        index = torch.bucketize(values.contiguous(), self.knots).clamp(1, knots - 1)
        left, right = self.knots[index - 1], self.knots[index]
        t = ((values - left) / (right - left)).clamp(0.0, 1.0)
        low = torch.gather(levels, 1, index - 1)
        high = torch.gather(levels, 1, index)
        return low + (high - low) * t


def pack_textures(paths: list[Path], out: Path, in_plane: int = 2) -> None:
    """NRRD CT volumes (``lung_ct.volume.read_nrrd``) as one .npz for ``--textures``: HU
    (slices, rows, columns) averaged over ``in_plane`` x ``in_plane`` pixels, int16, with
    their spacings (mm, the same order)."""
    arrays: dict[str, Any] = {}
    for n, path in enumerate(paths):
        ct = read_nrrd(path)
        hu = ct.hu.astype(np.float32)
        d, r, c = hu.shape
        r2, c2 = r // in_plane * in_plane, c // in_plane * in_plane
        pooled = hu[:, :r2, :c2].reshape(d, r2 // in_plane, in_plane, c2 // in_plane, in_plane)
        steps = np.diff(ct.geometry.positions, axis=0)
        slice_mm = float(np.median(np.linalg.norm(steps, axis=1))) if d > 1 else 1.0
        row_mm, col_mm = ct.geometry.pixel_spacing
        arrays[f"volume{n}"] = pooled.mean((2, 4)).round().astype(np.int16)
        arrays[f"spacing{n}"] = np.array(
            [slice_mm, row_mm * in_plane, col_mm * in_plane], dtype=np.float32
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)


def load_textures(path: Path, device: str) -> TextureBank:
    with np.load(path) as pack:
        count = sum(1 for name in pack.files if name.startswith("volume"))
        volumes = [pack[f"volume{n}"] for n in range(count)]
        spacings = [pack[f"spacing{n}"] for n in range(count)]
    return TextureBank(volumes, spacings, device)
