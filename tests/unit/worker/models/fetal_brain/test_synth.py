"""Synthesis of clinical-like stacks from brain label maps, and the training that uses it, on a
small ellipsoid "brain" the test makes (the real atlas is not in a clone)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from worker.models._nn import checkpoint
from worker.models._nn.hardware import bf16_native
from worker.models._nn.unet import UNet
from worker.models.fetal_brain.atlas import (
    DISTANCE_STEP_MM,
    LabelBank,
    bank_from_arrays,
    load_bank,
    save_bank,
)
from worker.models.fetal_brain.data import stack_order
from worker.models.fetal_brain.synth import (
    BrainBank,
    SynthConfig,
    channel_argmax,
    quantise,
    synthesise,
)
from worker.models.fetal_brain.textures import TextureBank
from worker.models.fetal_brain.train_synth import (
    PhantomPool,
    SynthTrainConfig,
    _average,
    _Kept,
    load_real,
    train,
)

VOXEL_MM = 2.0
RADII_MM = (30.0, 24.0, 20.0)


def _brain(shape: tuple[int, int, int] = (40, 36, 32)) -> npt.NDArray[np.uint8]:
    """An ellipsoid of two tissues: label 1 outside, label 2 (ventricles) in the middle."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape)[:, None, None, None] - 1) / 2
    offset = (grid - centre) * VOXEL_MM
    r = np.sqrt(sum((offset[i] / RADII_MM[i]) ** 2 for i in range(3)))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[r < 1] = 1
    labels[r < 0.4] = 2
    return labels


@pytest.fixture(scope="module")
def bank() -> LabelBank:
    return bank_from_arrays([_brain(), _brain()[::-1].copy()], VOXEL_MM, ["a", "b"])


def test_a_bank_is_padded_with_the_distance_outside_the_brain(
    bank: LabelBank, tmp_path: Path
) -> None:
    assert bank.labels.shape == (2, 80, 76, 72)  # 20 voxels of padding on every side
    inside = bank.labels[0] > 0
    assert (bank.outside[0][inside] == 0).all()
    # 10 voxels beyond the brain's edge along the first axis: 20 mm, in 0.2 mm steps.
    edge = int(np.nonzero(inside.any(axis=(1, 2)))[0].max())
    middle = (slice(None), bank.labels.shape[2] // 2, bank.labels.shape[3] // 2)
    along = bank.outside[0][middle]
    assert along[edge + 10] * DISTANCE_STEP_MM == pytest.approx(20.0, abs=0.5)
    save_bank(bank, tmp_path / "bank.npz")
    again = load_bank(tmp_path / "bank.npz")
    assert again.names == ("a", "b") and again.voxel_mm == VOXEL_MM
    assert np.array_equal(again.labels, bank.labels)
    assert again.select(["b"]).names == ("b",) and again.without(["b"]).names == ("a",)


def test_synthetic_stacks_are_8_bit_images_with_the_brain_as_truth(bank: LabelBank) -> None:
    config = SynthConfig(rows=64, cols=64, slices=(5, 5))
    batch = synthesise(BrainBank(bank, "cpu"), torch.Generator().manual_seed(3), 2, config)
    assert batch.images.shape == (2, 5, 64, 64) and batch.brain.shape == (2, 5, 64, 64)
    assert float(batch.images.min()) >= 0.0 and float(batch.images.max()) <= 1.0
    levels = batch.images * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # what normalise_stack makes
    assert float(batch.brain.min()) >= 0.0 and float(batch.brain.max()) <= 1.0
    assert float(batch.brain.sum()) > 0  # the brain sits near the middle of every stack
    # The image is not its truth: intensity alone does not give the brain away.
    assert float(batch.images[batch.brain >= 0.5].std()) > 0.02


def test_the_atlas_own_t2_brain_is_packed_and_drawn(tmp_path: Path) -> None:
    labels = _brain()
    # A T2 image with a left-right ramp inside the brain, zero outside: what srr.nii.gz holds.
    ramp = np.broadcast_to(np.linspace(100.0, 2000.0, labels.shape[2]), labels.shape)
    t2 = np.where(labels > 0, ramp, 0.0)
    bank = bank_from_arrays([labels], VOXEL_MM, ["a"], [t2])
    assert bank.intensity is not None and bank.intensity.shape == bank.labels.shape
    assert bank.intensity[bank.labels == 0].max() == 0  # only the brain is kept
    save_bank(bank, tmp_path / "bank.npz")
    again = load_bank(tmp_path / "bank.npz")
    assert again.intensity is not None and np.array_equal(again.intensity, bank.intensity)
    assert load_bank_without_intensity(tmp_path, labels).intensity is None

    # Two banks alike but for the brain's own image (the ramp reversed): with the same seed,
    # stacks drawn from them differ inside the brain only, and only when the atlas' image is
    # used.
    flipped = bank_from_arrays(
        [labels], VOXEL_MM, ["a"], [np.where(labels > 0, ramp[..., ::-1], 0)]
    )
    config = SynthConfig(rows=64, cols=64, slices=(5, 5), t2_like_fraction=1.0)
    for fraction, differs in ((0.0, False), (1.0, True)):
        c = replace(config, real_brain_fraction=fraction)
        one, two = (
            synthesise(BrainBank(b, "cpu"), torch.Generator().manual_seed(4), 2, c)
            for b in (bank, flipped)
        )
        assert torch.equal(one.brain, two.brain)
        change = (one.images - two.images).abs()
        inside, outside = change[one.brain >= 0.99], change[one.brain == 0]
        if differs:
            # outside, pixels move only through the stack's percentile scaling and the
            # in-plane blur at the brain's edge
            assert float(inside.mean()) > 5 * float(outside.mean()) + 0.01
        else:
            assert float(change.max()) == 0.0


def load_bank_without_intensity(folder: Path, labels: npt.NDArray[np.uint8]) -> LabelBank:
    save_bank(bank_from_arrays([labels], VOXEL_MM, ["a"]), folder / "plain.npz")
    return load_bank(folder / "plain.npz")


def test_the_same_seed_makes_the_same_stacks(bank: LabelBank) -> None:
    brains = BrainBank(bank, "cpu")
    config = SynthConfig(rows=32, cols=32, slices=(3, 6))
    first = synthesise(brains, torch.Generator().manual_seed(5), 1, config)
    again = synthesise(brains, torch.Generator().manual_seed(5), 1, config)
    other = synthesise(brains, torch.Generator().manual_seed(6), 1, config)
    assert torch.equal(first.images, again.images) and torch.equal(first.brain, again.brain)
    assert first.images.shape != other.images.shape or not torch.equal(first.images, other.images)


def test_the_synthetic_brain_has_the_label_maps_volume_times_the_scale_cubed(
    bank: LabelBank,
) -> None:
    """Thin contiguous slices over the whole brain: the truth's volume is the ellipsoid's,
    scaled, within what deformation and per-axis stretch allow."""
    config = SynthConfig(
        rows=64,
        cols=64,
        slices=(36, 36),
        pixel_mm=(2.0, 2.0),
        thickness_mm=(2.5, 2.5),
        gap_fraction=(0.0, 0.0),
        scale=(1.1, 1.1),
        centre_spread=0.0,
    )
    batch = synthesise(BrainBank(bank, "cpu"), torch.Generator().manual_seed(0), 2, config)
    volumes = batch.brain.sum((1, 2, 3)) * batch.pixel_mm**2 * batch.slice_mm / 1000
    expected = 4 / 3 * math.pi * math.prod(RADII_MM) / 1000 * 1.1**3
    for v in volumes.tolist():
        assert v == pytest.approx(expected, rel=0.3)


def test_quantise_scales_by_the_995th_percentile() -> None:
    image = torch.linspace(0, 10, 1000).reshape(1, 1, 10, 100)
    out = quantise(image)
    assert float(out.max()) == 1.0 and float((out == 1.0).float().mean()) < 0.01


def test_stack_order_takes_the_thick_axis_as_slices() -> None:
    assert stack_order([1.1, 1.1, 3.3]) == (2, 1, 0)  # the layout stacks usually have
    assert stack_order([3.3, 1.1, 1.1]) == (0, 2, 1)
    assert stack_order([1.1, 4.0, 1.1]) == (1, 2, 0)


@pytest.mark.parametrize("context", [0, 1])
def test_training_on_synthetic_stacks_saves_a_servable_checkpoint(
    bank: LabelBank, tmp_path: Path, context: int
) -> None:
    small = SynthConfig(rows=32, cols=32, slices=(3, 4))
    config = SynthTrainConfig(
        max_seconds=1.0,
        batch_size=4,
        stacks_per_step=1,
        base=4,
        depth=2,
        validate_every_s=1000.0,
        validation_stacks=1,
        reuse=2,
        synth=small,
        validation_synth=small,
        context=context,  # 1: each slice with its neighbours as channels (context.py)
    )
    # A "real" stack in the pack layout, scored at every validation.
    real = tmp_path / "real.npz"
    np.savez_compressed(
        real,
        s1__image=np.random.default_rng(0).random((3, 40, 40)).astype(np.float32),
        s1__mask=np.zeros((3, 40, 40), bool),
        s1__spacing=np.array([1.0, 1.0, 3.0], np.float32),
    )
    # Phantom slices to mix in, and a start from given weights (a second stage).
    pool_path = tmp_path / "phantoms.npz"
    rng = np.random.default_rng(1)
    np.savez_compressed(
        pool_path,
        images=rng.integers(0, 255, (5, 40, 40), dtype=np.uint8),
        masks=np.full((5, 40, 40), 255, np.uint8),
    )
    pool = PhantomPool(pool_path, "cpu")
    mixed_x, mixed_y = pool.mix(
        torch.zeros(8, 1, 32, 32), torch.zeros(8, 1, 32, 32), 0.25, torch.Generator()
    )
    assert float(mixed_y[:2].min()) == 1.0 and float(mixed_y[2:].max()) == 0.0
    assert mixed_x.shape == (8, 1, 32, 32)
    start = UNet(base=4, depth=2).state_dict()  # one channel: widened when context > 0
    out = tmp_path / "brain.pt"
    config.phantom_fraction = 0.25
    # Real anatomy from a small CT of soft tissue in half of the training stacks.
    config.synth = replace(small, texture_fraction=0.5, placenta_texture_fraction=0.5)
    ct = np.random.default_rng(2).integers(-100, 200, (10, 30, 30)).astype(np.int16)
    textures = TextureBank([ct], [np.array([5.0, 4.0, 4.0], np.float32)], "cpu")
    meta = train(
        bank, out, config, "cpu", real=load_real(real), init=start, phantoms=pool,
        textures=textures,
    )  # fmt: skip
    assert meta["steps"] >= 1 and meta["version"] == "2.0.0"
    assert meta["synthesis"]["texture_fraction"] == 0.5 and "real CT" in meta["trained_on"]
    assert tuple(meta["synthesis"]["skull_mm"]) == (1.0, 3.5)
    assert meta["precision"] == ("bf16 autocast" if bf16_native("cpu") else "fp32")
    assert meta["validated_on"].endswith("b")  # the last label map, held out
    assert "s1" in meta["best"]["real"]
    model, loaded = checkpoint.load(out, "cpu")
    assert loaded["sha256"] == meta["sha256"] and loaded["config"]["input_rows"] == 32
    assert loaded["config"].get("in_channels", 1) == 2 * context + 1
    assert meta["context_slices"] == context
    assert model(torch.zeros(1, 2 * context + 1, 32, 32)).shape == (1, 1, 32, 32)


def test_the_kept_weights_can_be_an_average_of_the_trajectory() -> None:
    """``ema_decay``: what is validated and saved is torch's EMA of the weights."""
    model = UNet(base=4, depth=2)
    average = _average(model, 0.9)
    first = next(model.parameters()).detach().clone()
    average.update_parameters(model)  # the first update copies the weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update_parameters(model)
    torch.testing.assert_close(next(average.module.parameters()), first + 0.1)

    kept = _Kept(model, SynthTrainConfig(max_seconds=100.0, ema_decay=0.9, ema_start=0.5))
    kept.after_step(10.0, 1)
    assert kept.scored() is model, "the raw weights until half the budget"
    kept.after_step(60.0, 2)
    assert kept.scored() is not model
    torch.testing.assert_close(next(kept.scored().parameters()), next(model.parameters()))


def test_planned_stacks_lie_on_an_anatomical_plane_within_the_tilt() -> None:
    from worker.models.fetal_brain.synth import planned_rotations

    gen = torch.Generator().manual_seed(0)
    turns = planned_rotations(gen, 300, fraction=1.0, tilt_deg=20.0)
    eye = torch.eye(3).expand(300, 3, 3)
    assert torch.allclose(turns @ turns.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(turns), torch.ones(300), atol=1e-5)
    normal = turns[:, 2]  # where the slice normal points in the atlas
    off_axis = torch.rad2deg(torch.arccos(normal.abs().amax(1).clamp(max=1.0)))
    assert float(off_axis.max()) <= 20.0 * math.sqrt(2) + 1e-3
    assert set(normal.abs().argmax(1).tolist()) == {0, 1, 2}  # sagittal, coronal and axial
    anywhere = planned_rotations(gen, 300, fraction=0.0)[:, 2]
    assert float(torch.rad2deg(torch.arccos(anywhere.abs().amax(1))).max()) > 35.0


def test_the_mother_has_a_spine_of_marrow_discs_and_muscle(bank: LabelBank) -> None:
    from worker.models.fetal_brain.synth import (
        DISC,
        MARROW,
        MUSCLE,
        _maternal_labels,
        _stack_points,
    )

    gen = torch.Generator().manual_seed(3)
    config = SynthConfig(rows=96, cols=96, pixel_mm=(4.0, 4.0), thickness_mm=(5.0, 6.0))
    labels = _maternal_labels(gen, _stack_points(gen, 6, 16, config))
    counts = torch.bincount(labels.flatten(), minlength=MUSCLE + 1)
    assert int(counts[MARROW]) > 0 and int(counts[DISC]) > 0 and int(counts[MUSCLE]) > 0


def test_the_skull_and_scalp_are_as_thick_as_asked(bank: LabelBank) -> None:
    """Thinner shells (``skull_mm``, ``scalp_mm``) cover fewer voxel samples around the same
    brains: the faint skull of real mid-gestation stacks."""
    from worker.models.fetal_brain.synth import SCALP, SKULL, _fetal_labels, _stack_points

    brains = BrainBank(bank, "cpu")
    counts = []
    for skull, scalp in (((0.4, 0.4), (0.3, 0.3)), ((3.0, 3.0), (4.0, 4.0))):
        config = SynthConfig(rows=48, cols=48, slices=(8, 8), pixel_mm=(2.0, 2.0),
                             skull_mm=skull, scalp_mm=scalp)  # fmt: skip
        gen = torch.Generator().manual_seed(7)
        points = _stack_points(gen, 2, 8, config)
        brain, other, _ = _fetal_labels(brains, gen, points.fetal, torch.tensor([0, 1]), config)
        outside = brain == 0  # the brain's labels cover the shells' inner side
        counts.append((int((outside & (other == SKULL)).sum()), int((other == SCALP).sum())))
    (thin_skull, thin_scalp), (thick_skull, thick_scalp) = counts
    assert 0 < thin_skull * 3 < thick_skull and thin_scalp * 3 < thick_scalp


def test_phantom_slices_are_packed_intracranial_for_mixing_in(tmp_path: Path) -> None:
    from worker.models.fetal_brain.data import INPUT_SIZE
    from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
    from worker.models.fetal_brain.train_synth import main

    out = tmp_path / "phantoms.npz"
    assert main(["--pack-phantoms", "7:8", "--out", str(out)]) == 0
    stack = make_fetal_brain_stack(7)
    with np.load(out) as pack:
        images, masks = pack["images"], pack["masks"]
    assert images.dtype == masks.dtype == np.uint8
    assert images.shape == masks.shape == (len(stack.image), *INPUT_SIZE)
    # The soft masks hold the intracranial volume (the atlas' outline), not the parenchyma:
    # their sum over the stack is that volume's in network pixels, within the resampling.
    rows, cols = stack.image.shape[1:]
    scale = INPUT_SIZE[0] * INPUT_SIZE[1] / (rows * cols)
    packed = float(masks.sum()) / 255
    assert packed == pytest.approx(stack.intracranial.sum() * scale, rel=0.01)
    assert packed > stack.brain.sum() * scale * 1.05
    pool = PhantomPool(out, "cpu")
    assert len(pool.images) == len(stack.image)


def test_channel_argmax_gives_torch_argmax_indices_ties_included() -> None:
    gen = torch.Generator().manual_seed(0)
    smooth = torch.randn(3, 7, 5000, generator=gen)
    tied = torch.randint(0, 3, (2, 5, 4000), generator=gen).float()  # many equal maxima
    for values in (smooth, tied, smooth[:, :1]):
        assert torch.equal(channel_argmax(values), values.argmax(1))


def test_a_face_lies_in_front_of_and_below_the_brain() -> None:
    """``_face`` in the atlas' frame (x left-right, y anterior, z superior, mm from the brain's
    centre): two globes either side of the midline, in front and below, lenses at their
    front, the face's soft tissue and a fluid mouth below the globes."""
    from worker.models.fetal_brain.synth import EYE, FACE, FLUID, SKULL, _face

    axis = torch.arange(-60.0, 61.0, 2.0)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)
    half = torch.tensor([[35.0, 42.0, 32.0]])
    label = _face(torch.Generator().manual_seed(5), points, half, 1.0)[0]
    x, y, z = points[0].unbind(-1)
    eyes, face, mouth = label == EYE, label == FACE, label == FLUID
    assert int((eyes & (x > 0)).sum()) > 20 and int((eyes & (x < 0)).sum()) > 20
    assert float(y[eyes].min()) > 0 and float(z[eyes].max()) < 0
    assert int(face.sum()) > 500 and float(y[face].mean()) > 0 and float(z[face].mean()) < 0
    assert int(mouth.sum()) > 0 and float(z[mouth].mean()) < float(z[eyes].mean())
    lens = (label == SKULL) & (y > float(y[eyes].mean()))  # dark lenses at the globes' front
    assert int(lens.sum()) > 0
    assert not _face(torch.Generator().manual_seed(5), points, half, 0.0).any()


def test_the_face_never_covers_the_brain_or_its_skull(bank: LabelBank) -> None:
    """With ``face_fraction`` the brain's labels and its skull shell are what they are
    without; the face replaces only what lies beyond the skull."""
    from worker.models.fetal_brain.synth import EYE, FACE, SKULL, _fetal_labels, _stack_points

    brains = BrainBank(bank, "cpu")
    assert brains.half_mm[0].tolist() == pytest.approx(RADII_MM, abs=VOXEL_MM)
    found = []
    for fraction in (0.0, 1.0):
        config = SynthConfig(rows=64, cols=64, slices=(16, 16), pixel_mm=(2.0, 2.0),
                             thickness_mm=(2.0, 2.0), face_fraction=fraction)  # fmt: skip
        gen = torch.Generator().manual_seed(11)
        points = _stack_points(gen, 2, 16, config)
        found.append(_fetal_labels(brains, gen, points.fetal, torch.tensor([0, 0]), config))
    (brain0, other0, _), (brain, other, _) = found
    assert torch.equal(brain, brain0)
    assert not ((other0 == EYE) | (other0 == FACE)).any()
    eyes, face = other == EYE, other == FACE
    assert int(eyes.sum()) > 20 and int(face.sum()) > 100
    skull0 = (other0 == SKULL) & (brain0 == 0)
    assert torch.equal(skull0, skull0 & (other == SKULL))


def test_an_extra_axial_csf_shell_widens_the_brain_inside_the_skull(bank: LabelBank) -> None:
    """``extra_csf_mm``: the atlas brain as it is, a shell of its extra-axial CSF label round
    it counted as brain, and the skull beyond the shell (the unoperated atlases have
    almost no CSF rim, a normal mid-gestation fetus a few mm)."""
    from worker.models.fetal_brain.synth import (
        EXTRA_AXIAL_CSF,
        SKULL,
        _fetal_labels,
        _stack_points,
    )

    brains = BrainBank(bank, "cpu")
    out = []
    for csf in ((0.0, 0.0), (3.0, 3.0)):
        config = SynthConfig(rows=48, cols=48, slices=(8, 8), pixel_mm=(2.0, 2.0),
                             extra_csf_mm=csf)  # fmt: skip
        gen = torch.Generator().manual_seed(7)
        points = _stack_points(gen, 2, 8, config)
        brain, other, _ = _fetal_labels(brains, gen, points.fetal, torch.tensor([0, 1]), config)
        out.append((brain, other))
    (plain, _), (widened, other) = out
    atlas = plain > 0
    assert torch.equal(widened[atlas], plain[atlas])  # the atlas brain unchanged
    shell = (widened > 0) & ~atlas
    assert int(shell.sum()) > 0.1 * int(atlas.sum())
    assert bool((widened[shell] == EXTRA_AXIAL_CSF).all())
    skull = (other == SKULL) & (widened == 0)
    assert int(skull.sum()) > 0  # a skull still, beyond the shell
