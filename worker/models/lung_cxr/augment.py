"""Chest film augmentation for the lung-field U-Net, on the fly on (N, 1, H, W) tensors in
[0, 1]: geometry shared by image and mask, the rest on the image alone.

- projection and positioning: mirror, +-12 degrees, x0.8-1.25 zoom, +-10 % width/height
  stretch (AP films are wider and shorter than PA), +-10 % shift;
- exposure: gain, offset, gamma, noise, blur;
- what lies on real films and not in the lung masks: tubes and wires (bright curves),
  ECG electrodes (bright discs) and burnt-in text (rows of bright blocks near an edge).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812

from worker.models._nn.train import warp_pair


def _uniform(gen: torch.Generator, *shape: int, device: torch.device) -> torch.Tensor:
    return torch.rand(*shape, generator=gen, device=device)


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None].expand(h, w)
    xs = torch.arange(w, device=device, dtype=torch.float32)[None, :].expand(h, w)
    return ys, xs


def _segment_mask(
    ys: torch.Tensor, xs: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor, width: float
) -> torch.Tensor:
    """Pixels within ``width`` of the segment p0-p1 ((y, x) in pixels)."""
    d = p1 - p0
    length2 = float((d * d).sum().clamp(min=1e-6))
    t = (((ys - p0[0]) * d[0] + (xs - p0[1]) * d[1]) / length2).clamp(0, 1)
    dist2 = (ys - p0[0] - t * d[0]) ** 2 + (xs - p0[1] - t * d[1]) ** 2
    return dist2 <= width * width


def overlay_devices(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Tubes/wires, electrodes and text drawn bright on some of the images."""
    n, _, h, w = x.shape
    dev = x.device
    ys, xs = _grid(h, w, dev)
    scale = torch.tensor([h, w], device=dev, dtype=torch.float32)
    out = x.clone()
    for k in range(n):
        draw = torch.zeros(h, w, dtype=torch.bool, device=dev)
        if float(_uniform(gen, 1, device=dev)) < 0.5:  # 1-3 tubes or wires, two bends each
            for _ in range(1 + int(_uniform(gen, 1, device=dev) * 3)):
                points = _uniform(gen, 3, 2, device=dev) * scale
                width = 0.7 + 2.0 * float(_uniform(gen, 1, device=dev))
                draw |= _segment_mask(ys, xs, points[0], points[1], width)
                draw |= _segment_mask(ys, xs, points[1], points[2], width)
        if float(_uniform(gen, 1, device=dev)) < 0.4:  # 1-4 electrodes
            for _ in range(1 + int(_uniform(gen, 1, device=dev) * 4)):
                cy, cx = (_uniform(gen, 2, device=dev) * scale).tolist()
                radius = 2.5 + 4 * float(_uniform(gen, 1, device=dev))
                draw |= (ys - cy) ** 2 + (xs - cx) ** 2 <= radius * radius
        if float(_uniform(gen, 1, device=dev)) < 0.4:  # a line of text near the top or bottom
            top = float(_uniform(gen, 1, device=dev)) < 0.5
            row = int((0.02 + 0.06 * float(_uniform(gen, 1, device=dev))) * h)
            row = row if top else h - row - 8
            col = int(float(_uniform(gen, 1, device=dev)) * w * 0.6)
            for _ in range(3 + int(_uniform(gen, 1, device=dev) * 8)):
                glyph = 3 + int(_uniform(gen, 1, device=dev) * 4)
                draw[row : row + 6, col : col + glyph] = True
                col += glyph + 2
        if draw.any():
            level = 0.75 + 0.25 * float(_uniform(gen, 1, device=dev))
            out[k, 0] = torch.where(draw, torch.full_like(out[k, 0], level), out[k, 0])
    return out


def augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``x`` and soft masks ``y`` (N, 1, H, W) in [0, 1], augmented (see module doc)."""
    n, dev = x.shape[0], x.device

    def uniform(*shape: int) -> torch.Tensor:
        return _uniform(gen, *shape, device=dev)

    angle = (uniform(n) - 0.5) * math.radians(24)
    scale = torch.exp((uniform(n) - 0.5) * 2 * math.log(1.25))
    aspect = torch.exp((uniform(n) - 0.5) * 2 * math.log(1.1))
    shift = (uniform(n, 2) - 0.5) * 0.2
    flip = torch.where(uniform(n) < 0.5, -1.0, 1.0)
    x, y = warp_pair(x, y, angle=angle, scale=scale, shift=shift, flip=flip, aspect=aspect)
    x = overlay_devices(x, gen)
    gain = 0.7 + 0.6 * uniform(n, 1, 1, 1)
    offset = (uniform(n, 1, 1, 1) - 0.5) * 0.2
    gamma = torch.exp((uniform(n, 1, 1, 1) - 0.5) * 2 * math.log(1.7))
    x = (x.clamp(0, 1) ** gamma) * gain + offset
    x = x + 0.04 * uniform(n, 1, 1, 1) * torch.randn(x.shape, generator=gen, device=dev)
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = torch.where(uniform(n, 1, 1, 1) < 0.3, blurred, x)
    return x, y
