"""Real CT anatomy as the synthetic mother's and fetal trunk's texture (``textures.py``), on
small volumes the tests write (the pyradiomics CTs are not needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nrrd
import numpy as np
import pytest
import torch

from worker.models.fetal_brain.atlas import bank_from_arrays
from worker.models.fetal_brain.synth import (
    BrainBank,
    SynthConfig,
    _real_anatomy,
    _stack_points,
    synthesise,
)
from worker.models.fetal_brain.textures import (
    _KNOTS_HU,
    TextureBank,
    load_textures,
    pack_textures,
)
from worker.models.fetal_brain.train_synth import main as train_synth_main


def _write_nrrd(path: Path, hu: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """``hu`` (slices, rows, columns) as pyradiomics writes a CT: LPS, axes (x, y, z)."""
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([spacing[2], spacing[1], spacing[0]]),
        "space origin": np.zeros(3),
    }
    nrrd.write(str(path), np.transpose(hu, (2, 1, 0)).astype(np.int16), header)


def _tissue_bank(hu: float = 40.0, shape: tuple[int, int, int] = (20, 40, 40)) -> TextureBank:
    volume = np.full(shape, hu, np.int16)
    return TextureBank([volume], [np.array([5.0, 2.0, 2.0], np.float32)], "cpu")


def test_ct_volumes_are_packed_pooled_in_plane_with_their_spacing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1500, (6, 8, 10)).astype(np.int16)
    _write_nrrd(tmp_path / "a_image.nrrd", hu, (5.0, 0.7, 0.8))
    pack_textures([tmp_path / "a_image.nrrd"], tmp_path / "textures.npz")
    with np.load(tmp_path / "textures.npz") as pack:
        assert pack["volume0"].shape == (6, 4, 5) and pack["volume0"].dtype == np.int16
        assert np.allclose(pack["spacing0"], [5.0, 1.4, 1.6])
        pooled = hu.astype(float).reshape(6, 4, 2, 5, 2).mean((2, 4))
        assert np.abs(pack["volume0"] - pooled).max() <= 0.5
    bank = load_textures(tmp_path / "textures.npz", "cpu")
    assert len(bank) == 1
    assert torch.allclose(bank.half_mm[0], torch.tensor([5 * 1.6 / 2, 4 * 1.4 / 2, 6 * 5.0 / 2]))


def test_the_intensity_curve_runs_through_its_levels_mr_like_or_any_order() -> None:
    bank = _tissue_bank()
    knots = bank.knots
    between = (knots[:-1] + knots[1:]) / 2
    values = torch.cat([knots, between])[None].repeat(400, 1)
    mr_like = torch.arange(400) < 200
    out = bank.curve(torch.Generator().manual_seed(1), values, mr_like)
    at_knots, mid = out[:, : len(knots)], out[:, len(knots) :]
    # Linear between knots: halfway is the mean of the two levels.
    assert torch.allclose(mid, (at_knots[:, :-1] + at_knots[:, 1:]) / 2, atol=1e-5)
    fat, muscle = _KNOTS_HU.index(-80), _KNOTS_HU.index(40)
    air = _KNOTS_HU.index(-1024)
    assert bool((at_knots[:200, fat] >= 0.6).all()) and bool((at_knots[:200, muscle] <= 0.4).all())
    assert bool((at_knots[:200, air] <= 0.05).all())
    # Any order in the rest: muscle brighter than fat in some of them.
    assert bool((at_knots[200:, muscle] > at_knots[200:, fat]).any())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_beyond_the_volume_is_air_and_air_is_not_tissue() -> None:
    bank = _tissue_bank()
    placed = bank.place(torch.Generator().manual_seed(0), 1, (1.0, 1.0), torch.eye(3)[None])
    placed = type(placed)(placed.volume, placed.rotation, placed.scale, torch.zeros(1, 3))
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 500.0], [10.0, -10.0, 20.0]]])
    values = bank.sample(points, torch.zeros(1, 3), placed, torch.ones(1, 3, dtype=torch.bool))
    assert bank.tissue(values).tolist() == [[True, False, True]]
    unmasked = bank.sample(points, torch.zeros(1, 3), placed, torch.zeros(1, 3, dtype=torch.bool))
    assert float(unmasked.abs().sum()) == 0.0


def test_real_anatomy_goes_only_where_the_regions_allow() -> None:
    config = SynthConfig(rows=24, cols=24, slices=(4, 4), texture_fraction=1.0,
                         trunk_texture_fraction=1.0)  # fmt: skip
    gen = torch.Generator().manual_seed(2)
    points = _stack_points(gen, 2, 4, config)
    size = points.scanner.shape[1]
    mother = torch.zeros(2, size, dtype=torch.bool)
    mother[:, : size // 2] = True
    trunk = torch.zeros(2, size, dtype=torch.bool)
    trunk[1, -10:] = True
    placenta = torch.zeros(2, size, dtype=torch.bool)
    placenta[0, -20:-10] = True
    big = _tissue_bank(shape=(80, 300, 300))  # 400 x 600 x 600 mm: covers every point
    where, values = _real_anatomy(gen, big, points, (mother, trunk, placenta), config)
    assert torch.equal(where, mother | trunk)  # no share of placentas asked for
    config = replace(config, placenta_texture_fraction=1.0)
    where, values = _real_anatomy(gen, big, points, (mother, trunk, placenta), config)
    assert torch.equal(where, mother | trunk | placenta)
    assert float(values[~where].abs().sum()) == 0.0
    assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0
    # No share of stacks chosen: nothing replaced.
    none = SynthConfig(rows=24, cols=24, slices=(4, 4))
    assert not none.real_anatomy and config.real_anatomy
    where, _ = _real_anatomy(gen, big, points, (mother, trunk, placenta), none)
    assert not bool(where.any())


def test_textures_change_the_images_but_never_the_brains_truth() -> None:
    grid = np.indices((30, 30, 30)).astype(float) - 14.5
    labels = (np.sqrt((grid**2).sum(0)) * 2.0 < 22).astype(np.uint8)
    brains = BrainBank(bank_from_arrays([labels, labels], 2.0, ["a", "b"]), "cpu")
    config = SynthConfig(rows=48, cols=48, slices=(5, 5), texture_fraction=1.0,
                         trunk_texture_fraction=1.0, placenta_texture_fraction=1.0,
                         pixel_mm=(3.0, 3.0))  # fmt: skip
    rng = np.random.default_rng(3)
    ct = rng.integers(-200, 300, (30, 80, 80)).astype(np.int16)
    textures = TextureBank([ct], [np.array([5.0, 3.0, 3.0], np.float32)], "cpu")
    plain = synthesise(brains, torch.Generator().manual_seed(4), 2, config)
    real = synthesise(brains, torch.Generator().manual_seed(4), 2, config, textures=textures)
    assert torch.equal(plain.brain, real.brain)
    assert not torch.equal(plain.images, real.images)


def test_texture_shares_without_textures_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        train_synth_main(["--bank", str(tmp_path / "bank.npz"), "--out", str(tmp_path / "b.pt"),
                          "--texture-fraction", "0.5"])  # fmt: skip
