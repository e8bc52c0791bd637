"""Clinical-like fetal MR stacks synthesised from brain label maps (the SynthSeg approach).

A real brain label map (``atlas.LabelBank``), deformed, rescaled and turned to any plane, is
placed inside synthetic anatomy built from random shapes: skull and scalp (shells at a distance
from the brain), the fetal body, amniotic fluid in a uterine cavity with its wall and a
placenta, fetal limbs, maternal tissues (random smooth label fields), subcutaneous fat and air;
in a share of stacks a fetal face (globes, lenses, orbits, a mouth) below the frontal lobes.
Each label gets a random intensity per stack (T2-like orderings half of the time, any order
the other half), then the stack is imaged as a single-shot acquisition would: thick slices
with gaps (partial volume through the slice), in-plane pixels of 0.6-1.5 mm, fetal motion
between slices, a smooth bias field, in-plane blur, per-slice gain, signal drop-outs, gamma
and Rician noise. The truth is the brain (every atlas label, extra-axial CSF included) as the
fraction of each voxel inside it.

Everything is torch on one device, vectorised over the stacks of a batch and the voxels of
each: the same code makes training batches on a GPU and, slower, on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812

from worker.models.fetal_brain.atlas import DISTANCE_STEP_MM, INTENSITY_SCALE, LabelBank

if TYPE_CHECKING:
    from worker.models.fetal_brain.textures import TextureBank

# Labels of the synthetic scene (1-8 are the atlas' brain tissues).
BRAIN_LABELS = 8
EXTRA_AXIAL_CSF = 4  # the atlas' label (FeTA order)
SKULL, SCALP, FLUID, BODY_A, BODY_B, LIMBS, WALL, PLACENTA = range(9, 17)
MATERNAL = (17, 18, 19, 20)
FAT = 21
MEMBRANE = 22  # thin walls: bowel, vessels, fascia, fetal organ boundaries
ORGANS = (23, 24, 25)  # more maternal and fetal organ tissues
DISC, MARROW, MUSCLE = 26, 27, 28  # the mother's spine and the muscles beside it
EYE, FACE = 29, 30  # the fetal face (``face_fraction``): the globes, and its soft tissues
N_LABELS = 31
FLUID_LIKE = (2, 4, FLUID)  # ventricles, extra-axial CSF, amniotic fluid: bright on T2
# The mother's tissues (her spine's bone included) and the fetal trunk: what real anatomy may
# replace (``textures.py``; the placenta too).
_MOTHER = (*MATERNAL, FAT, MEMBRANE, *ORGANS, DISC, MARROW, MUSCLE, SKULL)
_TRUNK = (BODY_A, BODY_B, ORGANS[0], MEMBRANE)


@dataclass(frozen=True)
class SynthConfig:
    rows: int = 256
    cols: int = 256
    slices: tuple[int, int] = (12, 28)
    # The network's pixel: a 256-pixel resize of clinical fields of view of 200-420 mm. With
    # rows, cols < 256 a stack is a patch of such a field (training crops).
    pixel_mm: tuple[float, float] = (0.78, 1.64)
    # Where the brain centre sits, in half patch sizes from the middle: mostly inside, some
    # patches catch part of it or none (``off_centre_fraction``).
    centre_spread: float = 0.45
    off_centre_fraction: float = 0.0
    off_centre_spread: float = 1.4
    # Where the brain centre sits through the stack, in stack extents from the middle: at
    # 0.25 most slices cut the brain; larger values leave more slices beyond its ends.
    depth_spread: float = 0.25
    thickness_mm: tuple[float, float] = (2.5, 6.0)
    gap_fraction: tuple[float, float] = (0.0, 0.3)
    through_plane_samples: int = 3
    scale: tuple[float, float] = (0.8, 1.25)  # about 20-38 weeks from the 21-34 week atlas
    t2_like_fraction: float = 0.5
    # Share of T2-like stacks whose brain takes the atlas' own T2 image (real tissue contrast
    # and folding, scaled by a random gain) instead of per-label means; needs a bank packed
    # with ``intensity``.
    real_brain_fraction: float = 0.0
    # Look-alikes: in this share of stacks the placenta, the fetal body's tissues and some
    # maternal organs take the mean intensity of a brain tissue, so that only the context (a
    # skull and a rim of fluid around a folded organ) tells the brain apart, as on real
    # T2 stacks where the placenta and the brain are of one grey.
    mimic_fraction: float = 0.0
    # In this share of stacks the fetal head lies against the placenta (the uterine cavity
    # shifted so that its placental side is near the brain), as it often does.
    placenta_near_fraction: float = 0.0
    # Share of stacks planned as a clinical stack is, on the fetal brain's sagittal, coronal
    # or axial plane (tilted by up to ``planned_tilt_deg``, any angle in plane), so that the
    # sagittal and coronal ones hold the trunk in plane beside the head; the rest at any angle.
    planned_fraction: float = 0.0
    planned_tilt_deg: float = 20.0
    # The skull and scalp shells' thickness (mm) beyond the brain mask's edge. On real stacks
    # of 20-30 weeks at 1.1-1.4 mm pixels the skull is often a faint line or none, and the
    # amniotic fluid's bright signal meets the extra-axial CSF's: thinner shells, partial
    # volume and blur make that faint line here too.
    skull_mm: tuple[float, float] = (1.0, 3.5)
    scalp_mm: tuple[float, float] = (1.5, 5.0)
    # A shell of extra-axial CSF (mm, drawn per stack) added round the atlas brain, inside
    # the skull and counted as brain (the intracranial convention). The unoperated spina
    # bifida atlases (21-25 weeks) have almost none (Chiari II effaces it: at 0.8 mm, 8-25 %
    # of their surface is CSF against 85-97 % in the operated ones, which have 1.6-3.0 mm),
    # while a normal fetus at mid-gestation has a few mm. (0, 0): none added.
    extra_csf_mm: tuple[float, float] = (0.0, 0.0)
    # Real anatomy (``textures.py``, given to ``synthesise``): in this share of stacks the
    # mother's tissues are a real CT volume, at any angle and at ``texture_scale``, through a
    # random intensity curve; in ``trunk_texture_fraction`` of them the fetal trunk is one,
    # scaled down to a fetus' size; in ``placenta_texture_fraction`` the placenta is.
    texture_fraction: float = 0.0
    texture_scale: tuple[float, float] = (0.8, 1.25)
    trunk_texture_fraction: float = 0.0
    trunk_texture_scale: tuple[float, float] = (0.22, 0.38)
    placenta_texture_fraction: float = 0.0
    placenta_texture_scale: tuple[float, float] = (0.5, 1.0)
    # In this share of stacks the fetus has a face below the front of the brain, outside the
    # skull: two fluid-bright globes with a dark lens in bony orbits, soft tissues, and a
    # fluid-filled mouth in a dark jaw. On real stacks the orbits and the face beside the
    # frontal lobes are where a network trained without them draws brain.
    face_fraction: float = 0.0

    @property
    def real_anatomy(self) -> bool:
        return max(self.texture_fraction, self.trunk_texture_fraction,
                   self.placenta_texture_fraction) > 0  # fmt: skip


class BrainBank:
    """A label bank on a device, ready for sampling."""

    def __init__(self, bank: LabelBank, device: str | torch.device) -> None:
        self.device = torch.device(device)
        # Float copies, (atlases, 1, D, H, W), so sampling a stack converts nothing.
        self.labels = torch.from_numpy(bank.labels).to(self.device).float()[:, None]
        self.outside = torch.from_numpy(bank.outside).to(self.device).float()[:, None]
        self.intensity = (
            None
            if bank.intensity is None
            else torch.from_numpy(bank.intensity).to(self.device).float()[:, None]
        )
        self.voxel_mm = bank.voxel_mm
        self.names = bank.names
        shape = bank.labels.shape[1:]
        self.shape = torch.tensor(shape, dtype=torch.float32, device=self.device)
        # Brain centre (voxel index) of each label map: the synthetic scene's origin.
        # And its half extents (mm) along the atlas' axes (x: left-right, y: anterior,
        # z: superior, as the CC0 atlas' identity orientation is), where the face is placed.
        centres, halves = [], []
        for i in range(len(bank.names)):
            idx = torch.nonzero(self.labels[i, 0] > 0).float()
            centres.append(idx.mean(0))
            halves.append((idx.amax(0) - idx.amin(0) + 1) * bank.voxel_mm / 2)
        self.centres = torch.stack(centres)
        self.half_mm = torch.stack(halves)

    def sample(
        self, volume: torch.Tensor, ids: torch.Tensor, grid: torch.Tensor, mode: str
    ) -> torch.Tensor:
        """Samples (S, P) of ``volume`` (labels or outside) of atlas ``ids[s]`` at ``grid``
        (S, 1, 1, P, 3), one stack at a time so that no volume is copied."""
        out = [
            F.grid_sample(
                volume[int(i) : int(i) + 1],
                grid[s : s + 1],
                mode=mode,
                padding_mode="zeros" if mode == "nearest" else "border",
                align_corners=True,
            )[0, 0, 0, 0]
            for s, i in enumerate(ids.tolist())
        ]
        return torch.stack(out)

    def __len__(self) -> int:
        return len(self.names)


def _rand(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    dev = gen.device
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=dev)


def random_rotations(gen: torch.Generator, n: int) -> torch.Tensor:
    """Uniform random 3D rotations (n, 3, 3), from normalised quaternions."""
    q = torch.randn(n, 4, generator=gen, device=gen.device)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], 1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], 1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1),
        ],
        1,
    )


def planned_rotations(
    gen: torch.Generator, n: int, fraction: float, tilt_deg: float = 20.0
) -> torch.Tensor:
    """Rotations (n, 3, 3) from the stack's frame (rows ``u, v, w``: ``atlas = stack @ R``)
    to the atlas'; in ``fraction`` of them the slice normal ``w`` lies along one of the
    atlas' axes (sagittal, coronal, axial), tilted by up to ``tilt_deg``, turned in plane at
    random; the others uniformly random."""
    dev = gen.device
    anywhere = random_rotations(gen, n)
    if fraction <= 0:
        return anywhere
    eye = torch.eye(3, device=dev)
    # Rows (in-plane, in-plane, normal) for a normal along x, y, z; determinant +1 each.
    bases = torch.stack([eye[[1, 2, 0]], eye[[2, 0, 1]], eye[[0, 1, 2]]])
    base = bases[torch.randint(0, 3, (n,), generator=gen, device=dev)]
    spin = torch.zeros(n, 3, device=dev)
    spin[:, 2] = _rand(gen, (n,), -math.pi, math.pi)
    tilt = torch.zeros(n, 3, device=dev)
    tilt[:, :2] = _rand(gen, (n, 2), -1.0, 1.0) * math.radians(tilt_deg)
    planned = small_rotations(tilt) @ small_rotations(spin) @ base
    pick = torch.rand(n, 1, 1, generator=gen, device=dev) < fraction
    return torch.where(pick, planned, anywhere)


def small_rotations(angles: torch.Tensor) -> torch.Tensor:
    """Rotations (..., 3, 3) from per-axis angles (..., 3) in radians (x, then y, then z)."""
    cx, cy, cz = torch.cos(angles).unbind(-1)
    sx, sy, sz = torch.sin(angles).unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cx, -sx], -1),
         torch.stack([zero, sx, cx], -1)], -2)  # fmt: skip
    ry = torch.stack(
        [torch.stack([cy, zero, sy], -1), torch.stack([zero, one, zero], -1),
         torch.stack([-sy, zero, cy], -1)], -2)  # fmt: skip
    rz = torch.stack(
        [torch.stack([cz, -sz, zero], -1), torch.stack([sz, cz, zero], -1),
         torch.stack([zero, zero, one], -1)], -2)  # fmt: skip
    return rz @ ry @ rx


def _frame_along(gen: torch.Generator, direction: torch.Tensor) -> torch.Tensor:
    """Rotations (S, 3, 3) whose third column (an ellipsoid's third local axis, see
    ``_ellipsoid_radius``) is ``direction`` (S, 3, unit), the other two at random."""
    a = torch.randn(direction.shape, generator=gen, device=direction.device)
    u = F.normalize(a - (a * direction).sum(1, keepdim=True) * direction, dim=1)
    return torch.stack([u, torch.linalg.cross(direction, u), direction], 2)


def _sample_field(field: torch.Tensor, points: torch.Tensor, extent_mm: float) -> torch.Tensor:
    """Trilinear samples (S, C, P) of fields (S, C, g, g, g) spanning ±extent_mm, at points
    (S, P, 3) in mm; constant beyond the edge."""
    grid = (points / extent_mm).flip(-1)[:, None, None]  # (S, 1, 1, P, 3) as (x, y, z)
    out = F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, 0, 0]


def channel_argmax(values: torch.Tensor) -> torch.Tensor:
    """``values.argmax(1)`` of finite values (S, C, P), in one comparison per channel over
    contiguous (S, P) slices; ties go to the first channel, as argmax's do. On a CPU, torch's
    argmax over the channel dim (a stride of P) took a fifth of the CPU recipe's time (0.17 s a
    call); this is 5x faster and gives the same indices."""
    best = values[:, 0].clone()
    index = torch.zeros(best.shape, dtype=torch.long, device=values.device)
    for c in range(1, values.shape[1]):
        channel = values[:, c]
        index.masked_fill_(channel > best, c)
        torch.maximum(best, channel, out=best)
    return index


def _noise(gen: torch.Generator, stacks: int, channels: int, size: int) -> torch.Tensor:
    return torch.randn(stacks, channels, size, size, size, generator=gen, device=gen.device)


def _ellipsoid_radius(points: torch.Tensor, centre: torch.Tensor, axes: torch.Tensor,
                      rotation: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Normalised ellipsoid radius (S, P) of points (S, P, 3): < 1 inside."""
    local = (points - centre[:, None]) @ rotation  # rotation (S, 3, 3), rows to local axes
    return ((local / axes[:, None]) ** 2).sum(-1).sqrt()


def _intensities(gen: torch.Generator, stacks: int, t2_like: torch.Tensor) -> torch.Tensor:
    """Per-stack mean intensity of every label (S, N_LABELS): T2-like or any order."""
    means = _rand(gen, (stacks, N_LABELS), 0.0, 1.0)
    prior = torch.tensor(
        [
            (0.0, 0.03),  # 0 air
            (0.40, 0.70),  # 1 white matter (unmyelinated: bright-ish)
            (0.75, 1.00),  # 2 ventricles
            (0.30, 0.55),  # 3 cerebellum
            (0.75, 1.00),  # 4 extra-axial CSF
            (0.20, 0.45),  # 5 cortical grey matter
            (0.25, 0.50),  # 6 deep grey matter
            (0.25, 0.50),  # 7 brainstem
            (0.30, 0.55),  # 8 corpus callosum
            (0.02, 0.25),  # 9 skull
            (0.25, 0.60),  # 10 scalp
            (0.75, 1.00),  # 11 amniotic fluid
            (0.20, 0.60),  # 12 fetal body
            (0.30, 0.80),  # 13 fetal organs
            (0.15, 0.60),  # 14 limbs, cord
            (0.20, 0.50),  # 15 uterine wall
            (0.30, 0.60),  # 16 placenta
            (0.05, 0.50),  # 17-20 maternal tissues
            (0.10, 0.60),
            (0.20, 0.80),
            (0.05, 0.90),
            (0.60, 1.00),  # 21 fat
            (0.00, 0.60),  # 22 membranes, walls
            (0.10, 0.90),  # 23-25 organs
            (0.10, 0.90),
            (0.10, 0.90),
            (0.35, 0.80),  # 26 intervertebral discs
            (0.25, 0.55),  # 27 vertebral marrow
            (0.08, 0.30),  # 28 muscle (paraspinal, psoas)
            (0.75, 1.00),  # 29 globes (vitreous)
            (0.25, 0.60),  # 30 the face's soft tissues
        ],
        device=gen.device,
    )
    u = torch.rand(stacks, N_LABELS, generator=gen, device=gen.device)
    t2 = prior[:, 0] + (prior[:, 1] - prior[:, 0]) * u
    out = torch.where(t2_like[:, None], t2, means)
    out[:, 0] = _rand(gen, (stacks,), 0.0, 0.05)  # air is dark in every MR image
    return out


@dataclass(frozen=True)
class SynthBatch:
    images: torch.Tensor  # (S, n, rows, cols) float in [0, 1], quantised to 8 bits
    brain: torch.Tensor  # (S, n, rows, cols) fraction of each voxel in the brain
    pixel_mm: torch.Tensor  # (S,)
    slice_mm: torch.Tensor  # (S,) centre-to-centre


@dataclass(frozen=True)
class _Stacks:
    """Where every voxel sample of a batch of stacks lies (mm)."""

    scanner: torch.Tensor  # (S, P, 3) the mother's (scanner's) frame
    fetal: torch.Tensor  # (S, P, 3) the fetus' frame (after motion), centred on the brain
    brain_at: torch.Tensor  # (S, 3) the brain centre in the scanner frame
    pixel: torch.Tensor  # (S,)
    thickness: torch.Tensor  # (S,)
    spacing: torch.Tensor  # (S,) centre to centre
    shape: tuple[int, int, int, int, int]  # (S, n, k, rows, cols)


def _stack_points(gen: torch.Generator, s_count: int, n: int, config: SynthConfig) -> _Stacks:
    """Sample positions of each stack: pixels, thick slices with gaps, and the brain placed
    in the field; then a rigid fetal move per slice around the brain centre."""
    dev = gen.device
    k, rows, cols = config.through_plane_samples, config.rows, config.cols
    pixel = _rand(gen, (s_count,), *config.pixel_mm)
    thickness = _rand(gen, (s_count,), *config.thickness_mm)
    spacing = thickness * (1 + _rand(gen, (s_count,), *config.gap_fraction))
    v = (torch.arange(rows, device=dev) - (rows - 1) / 2).float()
    u = (torch.arange(cols, device=dev) - (cols - 1) / 2).float()
    w = (torch.arange(n, device=dev) - (n - 1) / 2).float()
    offsets = (torch.arange(k, device=dev).float() + 0.5) / k - 0.5  # through the slice
    at = (slice(None), None, None, None, None)
    pu = u[None, None, None, None, :] * pixel[at]
    pv = v[None, None, None, :, None] * pixel[at]
    pw = (
        w[None, :, None, None, None] * spacing[at]
        + offsets[None, None, :, None, None] * (thickness[at])
    )
    shape = (s_count, n, k, rows, cols)
    scanner = torch.stack([pu.expand(shape), pv.expand(shape), pw.expand(shape)], -1)
    half = pixel[:, None] * torch.tensor([cols / 2, rows / 2], device=dev)
    off_centre = torch.rand(s_count, 1, generator=gen, device=dev) < config.off_centre_fraction
    spread = torch.where(off_centre, config.off_centre_spread, config.centre_spread)
    brain_at = torch.cat(
        [
            _rand(gen, (s_count, 2), -1.0, 1.0) * spread * half,
            (_rand(gen, (s_count,), -1.0, 1.0) * config.depth_spread * spacing * n)[:, None],
        ],
        -1,
    )
    # Fetal motion: a random walk of small moves and, now and then, a jerk.
    walk = _rand(gen, (s_count, 1, 1), 0.0, 1.0)
    jerk = (torch.rand(s_count, n, 1, generator=gen, device=dev) < 0.08).float()
    shifts = torch.cumsum(torch.randn(s_count, n, 3, generator=gen, device=dev), 1) * walk * 0.6
    shifts = shifts + jerk * torch.randn(s_count, n, 3, generator=gen, device=dev) * 4.0
    angles = torch.cumsum(torch.randn(s_count, n, 3, generator=gen, device=dev), 1)
    angles = angles * _rand(gen, (s_count, 1, 1), 0.0, 1.0) * math.radians(0.8)
    angles = angles + jerk * torch.randn(s_count, n, 3, generator=gen, device=dev) * (
        math.radians(6)
    )
    rel = scanner - brain_at[:, None, None, None, None]
    fetal = torch.einsum("snij,snkrcj->snkrci", small_rotations(angles), rel)
    fetal = fetal + shifts[:, :, None, None, None]
    return _Stacks(
        scanner.reshape(s_count, -1, 3),
        fetal.reshape(s_count, -1, 3),
        brain_at,
        pixel,
        thickness,
        spacing,
        shape,
    )


def _fetal_labels(
    bank: BrainBank,
    gen: torch.Generator,
    fetal: torch.Tensor,
    atlas_ids: torch.Tensor,
    config: SynthConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Brain labels (0 outside) and head/body labels (0 elsewhere) at the fetal points: the
    label map turned, scaled and smoothly deformed; skull and scalp as shells at a distance
    from the brain; the body an ellipsoid below the head with organs inside. Third: the
    atlas' own T2 image at the same points, when the bank has it."""
    s_count, dev = fetal.shape[0], fetal.device
    rotation = planned_rotations(gen, s_count, config.planned_fraction)
    scale = _rand(gen, (s_count, 1), *config.scale) * _rand(gen, (s_count, 3), 0.93, 1.07)
    brain_mm = (fetal @ rotation) / scale[:, None]  # atlas-frame mm
    deform = _noise(gen, s_count, 3, 5) * _rand(gen, (s_count, 1, 1, 1, 1), 0.0, 3.0)
    brain_mm = brain_mm + _sample_field(deform, brain_mm, 90.0).transpose(1, 2)
    index = brain_mm / bank.voxel_mm + bank.centres[atlas_ids][:, None]
    grid = (index / (bank.shape - 1) * 2 - 1).flip(-1)[:, None, None]
    brain = bank.sample(bank.labels, atlas_ids, grid, "nearest").round().long()
    mean_scale = scale.mean(1)
    outside_mm = bank.sample(bank.outside, atlas_ids, grid, "bilinear") * (
        DISTANCE_STEP_MM * mean_scale[:, None]
    )
    t2 = None
    if bank.intensity is not None:
        t2 = bank.sample(bank.intensity, atlas_ids, grid, "bilinear")
    if config.extra_csf_mm[1] > 0:  # drawn only when asked: the default stream is unchanged
        csf_mm = _rand(gen, (s_count, 1), *config.extra_csf_mm)
        shell = (brain == 0) & (outside_mm < csf_mm)
        brain = torch.where(shell, EXTRA_AXIAL_CSF, brain)
        if t2 is not None:  # the atlas' own T2 is 0 beyond its brain: CSF is its brightest
            t2 = torch.where(shell, torch.full_like(t2, INTENSITY_SCALE), t2)
        outside_mm = outside_mm - csf_mm  # the skull and scalp begin beyond the shell
    skull_mm = _rand(gen, (s_count, 1), *config.skull_mm)
    scalp_mm = skull_mm + _rand(gen, (s_count, 1), *config.scalp_mm)
    down = torch.tensor([0.0, 0.0, -1.0], device=dev)
    body_dir = F.normalize(down + 0.6 * torch.randn(s_count, 3, generator=gen, device=dev), dim=1)
    body_axes = torch.stack(
        [_rand(gen, (s_count,), 35, 60), _rand(gen, (s_count,), 35, 60),
         _rand(gen, (s_count,), 70, 130)], 1) * mean_scale[:, None]  # fmt: skip
    # The trunk begins at the neck, close under the head: on real stacks the fetal body
    # fills much of the uterus beside the head, with little fluid between.
    body_centre = body_dir * (40.0 * mean_scale + body_axes[:, 2] * 0.8)[:, None]
    # Mostly the trunk's long axis points away from the head, so that the body meets the
    # scalp at the neck as a real fetus' does; now and then at any angle (a flexed fetus).
    aligned = torch.rand(s_count, 1, 1, generator=gen, device=dev) < 0.7
    body_rot = torch.where(aligned, _frame_along(gen, body_dir), random_rotations(gen, s_count))
    in_body = _ellipsoid_radius(brain_mm * scale[:, None], body_centre, body_axes, body_rot) < 1
    parts = _sample_field(_noise(gen, s_count, 4, 12), brain_mm, 120.0)
    body_kinds = torch.tensor((BODY_A, BODY_B, LIMBS, ORGANS[0]), device=dev)
    top2 = parts.topk(2, dim=1).values
    body_label = torch.where(
        (top2[:, 0] - top2[:, 1]) < 0.06, MEMBRANE, body_kinds[channel_argmax(parts)]
    )
    other = torch.zeros_like(brain)
    other = torch.where(in_body, body_label, other)
    other = torch.where(outside_mm < scalp_mm, SCALP, other)
    other = torch.where(outside_mm < skull_mm, SKULL, other)
    if config.face_fraction > 0:
        face = _face(gen, brain_mm, bank.half_mm[atlas_ids], config.face_fraction)
        other = torch.where((face > 0) & (outside_mm >= skull_mm), face, other)
    return brain, other, t2


def _face(
    gen: torch.Generator, brain_mm: torch.Tensor, half: torch.Tensor, fraction: float
) -> torch.Tensor:
    """Face labels (S, P), 0 elsewhere, at points ``brain_mm`` (S, P, 3) of the atlas' frame
    (mm from the brain's centre; x left-right, y anterior, z superior), in ``fraction`` of
    the stacks: placed in units of the brain's half extents ``half`` (S, 3), so that they
    follow its size and deformation. Soft tissue below and in front of the frontal lobes; in
    it two globes (vitreous: fluid-bright) with a dark lens at the front and a bony rim
    behind; a fluid-filled mouth with a dark jaw around its lower side."""
    s_count, dev = brain_mm.shape[0], brain_mm.device
    on = torch.rand(s_count, 1, generator=gen, device=dev) < fraction
    hx, hy, hz = (half[:, i : i + 1] for i in range(3))
    _, y, z = brain_mm.unbind(-1)
    upright = torch.eye(3, device=dev).expand(s_count, 3, 3)  # axis-aligned in the atlas

    def rand(lo: float, hi: float) -> torch.Tensor:
        return _rand(gen, (s_count, 1), lo, hi)

    def radius(centre: tuple[torch.Tensor, ...], axes: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``_ellipsoid_radius`` of per-stack (S, 1) centre and axis coordinates."""
        return _ellipsoid_radius(brain_mm, torch.cat(centre, 1), torch.cat(axes, 1), upright)

    zero = torch.zeros_like(hx)
    label = torch.zeros(brain_mm.shape[:2], dtype=torch.long, device=dev)
    face_y, face_z = rand(0.55, 0.8) * hy, -rand(0.7, 0.95) * hz
    face_axes = (rand(0.6, 0.85) * hx, rand(0.35, 0.55) * hy, rand(0.45, 0.7) * hz)
    soft = radius((zero, face_y, face_z), face_axes) < 1
    label = torch.where(soft, FACE, label)
    mouth_y, mouth_z = face_y + rand(0.1, 0.3) * hy, face_z - rand(0.1, 0.35) * hz
    mouth_axes = (rand(0.15, 0.3) * hx, rand(0.15, 0.3) * hy, rand(0.06, 0.14) * hz)
    mouth = radius((zero, mouth_y, mouth_z), mouth_axes)
    jaw = soft & (mouth < rand(1.3, 1.6)) & (z < mouth_z)
    label = torch.where(jaw, SKULL, label)
    label = torch.where(soft & (mouth < 1), FLUID, label)
    eye_x, eye_y, eye_z = rand(0.3, 0.45) * hx, rand(0.65, 0.9) * hy, -rand(0.45, 0.75) * hz
    eye_r = rand(0.11, 0.17) * hy
    rim = rand(1.0, 2.5)  # mm of bone behind each globe
    for side in (-1.0, 1.0):
        globe = radius((side * eye_x, eye_y, eye_z), (eye_r, eye_r, eye_r)) * eye_r
        orbit = (globe < eye_r + rim) & (y < eye_y + 0.2 * eye_r)
        label = torch.where(orbit, SKULL, label)
        label = torch.where(globe < eye_r, EYE, label)
        lens_r = eye_r * 0.3
        lens_axes = (lens_r, lens_r * 0.6, lens_r)
        lens = radius((side * eye_x, eye_y + 0.75 * eye_r, eye_z), lens_axes)
        label = torch.where(lens < 1, SKULL, label)
    return torch.where(on, label, torch.zeros_like(label))


def _maternal_labels(
    gen: torch.Generator, points: _Stacks, near_fraction: float = 0.0
) -> torch.Tensor:
    """The mother, static while the fetus moves: air, tissues with bowel-like blobs,
    subcutaneous fat, the uterine wall, the placenta, amniotic fluid and floating limbs.
    In ``near_fraction`` of the stacks the head lies against the placenta."""
    scanner, s_count, dev = points.scanner, points.scanner.shape[0], points.scanner.device
    cavity_axes = _rand(gen, (s_count, 3), 60.0, 130.0)
    placenta_dir = F.normalize(torch.randn(s_count, 3, generator=gen, device=dev), dim=1)
    near = torch.rand(s_count, 1, generator=gen, device=dev) < near_fraction
    # Near: the cavity's centre moved away from the placenta's side, so that the placenta
    # (the cavity's outer 15-35 % on that side) begins 0-25 mm beyond a 45-60 mm head radius.
    reach = cavity_axes.amin(1, keepdim=True) * 0.75 - _rand(gen, (s_count, 1), 45.0, 85.0)
    offset = torch.where(
        near,
        -placenta_dir * reach.clamp(min=0.0),
        torch.randn(s_count, 3, generator=gen, device=dev) * 20.0,
    )
    cavity_centre = points.brain_at + offset
    cavity_r = _ellipsoid_radius(
        scanner, cavity_centre, cavity_axes, random_rotations(gen, s_count)
    )
    wall = _rand(gen, (s_count, 1), 0.04, 0.12)
    radial = F.normalize(scanner - cavity_centre[:, None], dim=-1)
    placenta = (
        (radial @ placenta_dir[:, :, None])[..., 0] > _rand(gen, (s_count, 1), 0.5, 0.8)
    ) & (cavity_r > 1 - _rand(gen, (s_count, 1), 0.15, 0.35))
    limbs = _sample_field(_noise(gen, s_count, 1, 14), scanner, 200.0)[:, 0] > _rand(
        gen, (s_count, 1), 1.2, 2.2
    )
    mother_axes = torch.stack(
        [_rand(gen, (s_count,), 130, 210), _rand(gen, (s_count,), 110, 170),
         _rand(gen, (s_count,), 200, 400)], 1)  # fmt: skip
    # Stacks are planned on the fetal brain, so the mother lies at any angle to them: her
    # long axis (and spine) runs through, across or along the slices.
    turn = random_rotations(gen, s_count)
    mother = torch.einsum("spj,sjk->spk", scanner - cavity_centre[:, None], turn)
    mother = mother + cavity_centre[:, None]
    upright = torch.eye(3, device=dev).expand(s_count, 3, 3)
    mother_r = _ellipsoid_radius(mother, cavity_centre * 0.5, mother_axes, upright)
    fat_depth = _rand(gen, (s_count, 1), 0.03, 0.12)
    kinds = torch.tensor((*MATERNAL, *ORGANS), device=dev)
    tissue = _sample_field(_noise(gen, s_count, len(MATERNAL), 9), scanner, 300.0)
    maternal = kinds[channel_argmax(tissue)]
    # Organs of every size with walls around them, and bowel-like loops: the structured
    # anatomy a network must learn not to take for a brain.
    grid = int(torch.randint(14, 40, (1,), generator=gen, device=dev))
    organs = _sample_field(_noise(gen, s_count, len(kinds), grid), scanner, 300.0)
    organ_kind = kinds[channel_argmax(organs)]
    top2 = organs.topk(2, dim=1).values
    in_organs = _sample_field(_noise(gen, s_count, 1, 6), scanner, 300.0)[:, 0] > _rand(
        gen, (s_count, 1), -0.8, 0.4
    )
    maternal = torch.where(in_organs, organ_kind, maternal)
    walls = in_organs & ((top2[:, 0] - top2[:, 1]) < _rand(gen, (s_count, 1), 0.02, 0.12))
    maternal = torch.where(walls, MEMBRANE, maternal)
    fine = _sample_field(_noise(gen, s_count, 2, 48), scanner, 300.0)
    loops = fine[:, 0].abs() < _rand(gen, (s_count, 1), 0.03, 0.15)
    maternal = torch.where(loops & (fine[:, 1] > 0), kinds[-1], maternal)
    maternal = _spine(gen, mother, cavity_centre * 0.5, mother_axes, maternal)
    label = torch.where(mother_r < 1, maternal, torch.zeros_like(maternal))  # air outside
    label = torch.where((mother_r < 1) & (mother_r > 1 - fat_depth), FAT, label)
    label = torch.where(cavity_r < 1 + wall, WALL, label)
    label = torch.where(cavity_r < 1, FLUID, label)
    label = torch.where((cavity_r < 1) & placenta, PLACENTA, label)
    return torch.where((cavity_r < 1) & limbs, LIMBS, label)


def _spine(gen: torch.Generator, mother: torch.Tensor, centre: torch.Tensor,
           axes: torch.Tensor, label: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The mother's lumbar spine along her long axis (z) at her back (+y): vertebral bodies
    of marrow in a dark cortex with discs between them, the spinal canal (fluid) in a bony
    ring behind, paraspinal muscles behind and psoas muscles beside. On real stacks a
    vertebra in its ring of bone and muscle is the look-alike a network takes for a head."""
    s_count = mother.shape[0]
    body_r = _rand(gen, (s_count, 1), 14.0, 22.0)
    axis_x = centre[:, 0:1]
    axis_y = centre[:, 1:2] + axes[:, 1:2] * _rand(gen, (s_count, 1), 0.35, 0.6)
    x, y, z = (mother[..., i] for i in range(3))
    dx = x - axis_x

    def within(
        cx: torch.Tensor, cy: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor
    ) -> torch.Tensor:
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1

    period = _rand(gen, (s_count, 1), 28.0, 38.0)
    disc = torch.remainder(z / period + _rand(gen, (s_count, 1), 0.0, 1.0), 1.0) < 0.22
    r_body = torch.sqrt(dx**2 + (y - axis_y) ** 2)
    canal_y = axis_y + body_r + 9.0
    r_canal = torch.sqrt(dx**2 + (y - canal_y) ** 2)
    canal_r = _rand(gen, (s_count, 1), 5.0, 8.0)
    muscle = within(axis_x + body_r + 14, canal_y + 10, body_r * 0.9 + 8, body_r + 10)
    muscle |= within(axis_x - body_r - 14, canal_y + 10, body_r * 0.9 + 8, body_r + 10)
    muscle |= within(axis_x + body_r + 8, axis_y - 4, body_r * 0.7, body_r * 0.8)
    muscle |= within(axis_x - body_r - 8, axis_y - 4, body_r * 0.7, body_r * 0.8)
    label = torch.where(muscle, MUSCLE, label)
    label = torch.where(r_canal < canal_r + 3.0, SKULL, label)  # the bony ring
    label = torch.where(r_canal < canal_r, FLUID, label)
    label = torch.where(r_body < body_r, SKULL, label)  # cortex
    return torch.where(r_body < body_r - 2.0, torch.where(disc, DISC, MARROW), label)


def _signal(gen: torch.Generator, label: torch.Tensor, scanner: torch.Tensor,
            config: SynthConfig, t2_brain: torch.Tensor | None = None, *,
            override: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """Per-voxel-sample signal: each label's random mean with texture (or, in a share of
    T2-like stacks, the atlas' own T2 brain; where ``override``'s mask is set, its values),
    white noise and a smooth bias field."""
    s_count, dev = label.shape[0], label.device
    t2_like = torch.rand(s_count, generator=gen, device=dev) < config.t2_like_fraction
    means = _intensities(gen, s_count, t2_like)
    if config.mimic_fraction > 0:
        means = _look_alikes(gen, means, config.mimic_fraction)
    texture_amp = _rand(gen, (s_count, N_LABELS), 0.0, 0.25)
    texture = _sample_field(_noise(gen, s_count, 1, 40), scanner, 250.0)[:, 0]
    signal = torch.gather(means, 1, label) * (1 + torch.gather(texture_amp, 1, label) * texture)
    if t2_brain is not None and config.real_brain_fraction > 0:
        real = torch.rand(s_count, generator=gen, device=dev) < config.real_brain_fraction
        gain = _rand(gen, (s_count, 1), 0.8, 1.15) / INTENSITY_SCALE
        in_brain = (label > 0) & (label <= BRAIN_LABELS)
        signal = torch.where((real & t2_like)[:, None] & in_brain, t2_brain * gain, signal)
    if override is not None:
        signal = torch.where(override[0], override[1], signal)
    signal = signal + torch.randn(signal.shape, generator=gen, device=dev) * _rand(
        gen, (s_count, 1), 0.0, 0.04
    )
    bias = _sample_field(_noise(gen, s_count, 1, 4), scanner, 250.0)[:, 0]
    return signal * torch.exp(bias * _rand(gen, (s_count, 1), 0.0, 0.35))


_BRAIN_GREYS = (1, 3, 5, 6)  # white matter, cerebellum, cortex, deep grey matter
_LOOK_ALIKES = (PLACENTA, BODY_A, BODY_B, ORGANS[0], MATERNAL[0], MATERNAL[2])


def _look_alikes(gen: torch.Generator, means: torch.Tensor, fraction: float) -> torch.Tensor:
    """In ``fraction`` of the stacks, each look-alike label (half of them at random) takes a
    random brain tissue's mean intensity (within 10 %)."""
    s_count, dev = means.shape[0], means.device
    stack = torch.rand(s_count, 1, generator=gen, device=dev) < fraction
    which = torch.rand(s_count, len(_LOOK_ALIKES), generator=gen, device=dev) < 0.5
    greys = torch.tensor(_BRAIN_GREYS, device=dev)
    source = greys[torch.randint(0, len(greys), (s_count, len(_LOOK_ALIKES)), generator=gen,
                                 device=dev)]  # fmt: skip
    borrowed = torch.gather(means, 1, source) * _rand(gen, (s_count, len(_LOOK_ALIKES)), 0.9, 1.1)
    targets = torch.tensor(_LOOK_ALIKES, device=dev)
    out = means.clone()
    out[:, targets] = torch.where(stack & which, borrowed, means[:, targets])
    return out


def _acquire(gen: torch.Generator, signal: torch.Tensor) -> torch.Tensor:
    """Slices (S, n, rows, cols) as the scanner returns them: blur, per-slice gain,
    drop-outs, gamma and Rician noise."""
    s_count, n, rows, cols = signal.shape
    dev = signal.device
    image = _blur(signal, gen)
    gain = 1 + torch.randn(s_count, n, 1, 1, generator=gen, device=dev) * _rand(
        gen, (s_count, 1, 1, 1), 0.0, 0.08
    )
    image = image * gain * _dropouts(gen, s_count, n, rows, cols)
    image = image.clamp(min=0) ** _rand(gen, (s_count, 1, 1, 1), 0.7, 1.5)
    top = image.reshape(s_count, -1).amax(1).clamp(min=1e-6)[:, None, None, None]
    sigma = _rand(gen, (s_count, 1, 1, 1), 0.0, 0.05) * top
    return torch.sqrt(
        (image + sigma * torch.randn(image.shape, generator=gen, device=dev)) ** 2
        + (sigma * torch.randn(image.shape, generator=gen, device=dev)) ** 2
    )


def _real_anatomy(
    gen: torch.Generator,
    textures: TextureBank,
    points: _Stacks,
    regions: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: SynthConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where (S, P) and what signal real anatomy puts in place of the mother's tissues, the
    fetal trunk and the placenta (``regions``), each centred on its region and turned at
    random."""
    s_count, dev = points.scanner.shape[0], points.scanner.device
    where = torch.zeros(regions[0].shape, dtype=torch.bool, device=dev)
    values = torch.zeros(regions[0].shape, device=dev)
    for region, frame, fraction, scale in (
        (regions[0], points.scanner, config.texture_fraction, config.texture_scale),
        (regions[1], points.fetal, config.trunk_texture_fraction, config.trunk_texture_scale),
        (regions[2], points.scanner, config.placenta_texture_fraction,
         config.placenta_texture_scale),
    ):  # fmt: skip
        if fraction <= 0:
            continue
        chosen = region & (torch.rand(s_count, 1, generator=gen, device=dev) < fraction)
        weight = chosen.float()[..., None]
        centre = (frame * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        placed = textures.place(gen, s_count, scale, random_rotations(gen, s_count))
        mr_like = torch.rand(s_count, generator=gen, device=dev) < config.t2_like_fraction
        raw = textures.sample(frame, centre, placed, chosen)
        chosen &= textures.tissue(raw)
        values = torch.where(chosen, textures.curve(gen, raw, mr_like), values)
        where |= chosen
    return where, values


def synthesise(
    bank: BrainBank,
    gen: torch.Generator,
    stacks: int,
    config: SynthConfig = SynthConfig(),
    atlas_ids: torch.Tensor | None = None,
    *,
    textures: TextureBank | None = None,
) -> SynthBatch:
    """``stacks`` synthetic stacks of one random slice count, on ``bank``'s device; with
    ``textures``, real anatomy in the shares of stacks the config names."""
    dev = bank.device
    slices = torch.randint(config.slices[0], config.slices[1] + 1, (1,), generator=gen, device=dev)
    if atlas_ids is None:
        atlas_ids = torch.randint(0, len(bank), (stacks,), generator=gen, device=dev)
    points = _stack_points(gen, stacks, int(slices), config)
    brain, fetal, t2_brain = _fetal_labels(bank, gen, points.fetal, atlas_ids, config)
    maternal = _maternal_labels(gen, points, config.placenta_near_fraction)
    label = torch.where(fetal > 0, fetal, maternal)
    label = torch.where(brain > 0, brain, label)
    override = None
    if textures is not None and config.real_anatomy:
        free = (brain == 0) & (fetal == 0)
        mother = torch.isin(maternal, torch.tensor(_MOTHER, device=dev)) & free
        trunk = torch.isin(fetal, torch.tensor(_TRUNK, device=dev)) & (brain == 0)
        placenta = (maternal == PLACENTA) & free
        override = _real_anatomy(gen, textures, points, (mother, trunk, placenta), config)
    signal = _signal(gen, label, points.scanner, config, t2_brain, override=override)
    signal = signal.reshape(points.shape)
    truth = (brain > 0).float().reshape(points.shape).mean(2)  # partial volume in the slice
    image = _acquire(gen, signal.mean(2).clamp(min=0))
    return SynthBatch(quantise(image), truth, points.pixel, points.spacing)


def _blur(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """In-plane Gaussian blur with a random width per stack (0.3-1.2 pixels)."""
    s_count, n, rows, cols = image.shape
    sigma = _rand(gen, (s_count,), 0.3, 1.2)
    taps = torch.arange(-3, 4, device=image.device).float()
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (S, 7)
    x = image.reshape(1, s_count * n, rows, cols)
    kx = kernel.repeat_interleave(n, 0)[:, None, None, :]
    ky = kernel.repeat_interleave(n, 0)[:, None, :, None]
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), kx, groups=s_count * n)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), ky, groups=s_count * n)
    return x.reshape(s_count, n, rows, cols)


def _dropouts(gen: torch.Generator, s_count: int, n: int, rows: int, cols: int) -> torch.Tensor:
    """Multiplicative signal drop-outs: a few slices darkened, whole or in a band."""
    dev = gen.device
    factor = torch.ones(s_count, n, rows, cols, device=dev)
    hit = torch.rand(s_count, n, generator=gen, device=dev) < 0.06
    depth = _rand(gen, (s_count, n), 0.2, 0.8)
    band_centre = _rand(gen, (s_count, n), 0.0, float(rows))
    band_half = _rand(gen, (s_count, n), 10.0, float(rows))
    r = torch.arange(rows, device=dev).float()[None, None, :, None]
    in_band = (r - band_centre[..., None, None]).abs() < band_half[..., None, None]
    dark = hit[..., None, None] & in_band
    return torch.where(dark, depth[..., None, None].expand_as(factor), factor)


def quantise(image: torch.Tensor) -> torch.Tensor:
    """As the service sees a stack: scaled by its 99.5th percentile, clipped, 8 bits
    (``predict.normalise_stack``), returned in [0, 1]."""
    s_count = image.shape[0]
    flat = image.reshape(s_count, -1)
    sample = flat[:, :: max(1, flat.shape[1] // 500_000)]
    top = torch.quantile(sample, 0.995, dim=1).clamp(min=1e-6)
    scaled = (image / top[:, None, None, None]).clamp(0, 1)
    return torch.floor(scaled * 255) / 255
