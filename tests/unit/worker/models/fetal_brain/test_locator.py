"""The coarse 3D localiser: shapes through the stack, its checkpoint, its training loop."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.worker.models.fetal_brain.test_synth import VOXEL_MM, _brain
from worker.models._nn.checkpoint import CheckpointError
from worker.models.fetal_brain.atlas import bank_from_arrays
from worker.models.fetal_brain.locator import (
    COARSE,
    Locator3d,
    coarse,
    load,
    logits,
    padded_depth,
    region_probability,
)
from worker.models.fetal_brain.train_locator import LocatorTrainConfig, locator_synth, train
from worker.models.fetal_brain.train_synth import load_real


def test_any_slice_count_is_padded_to_the_poolings_and_cropped_back() -> None:
    model = Locator3d(base=2)
    for n in (1, 5, 8, 22):
        assert padded_depth(n) % 4 == 0 and padded_depth(n) - n < 4
        assert logits(model, torch.rand(2, n, COARSE, COARSE)).shape == (2, n, COARSE, COARSE)


def test_coarse_is_the_area_mean() -> None:
    stack = torch.zeros(3, 128, 128)
    stack[:, :64, :] = 1.0
    small = coarse(stack)
    assert small.shape == (3, COARSE, COARSE)
    assert float(small[:, : COARSE // 2].min()) == 1.0 and float(small[:, COARSE // 2 :].max()) == 0
    assert coarse(torch.ones(2, 4, 5, 320, 300)).shape == (2, 4, 5, COARSE, COARSE)


def test_the_region_comes_back_at_the_stack_size_as_probabilities() -> None:
    stack = np.random.default_rng(0).integers(0, 255, (6, 100, 90), dtype=np.uint8)
    prob = region_probability(Locator3d(base=2), stack)
    assert prob.shape == stack.shape and prob.dtype == np.float32
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    folder = tmp_path_factory.mktemp("locator")
    bank = bank_from_arrays([_brain(), _brain()[::-1].copy()], VOXEL_MM, ["a", "b"])
    real = folder / "real.npz"
    np.savez_compressed(
        real,
        s1__image=np.random.default_rng(0).random((5, 80, 80)).astype(np.float32),
        s1__mask=np.zeros((5, 80, 80), bool),
        s1__spacing=np.array([1.0, 1.0, 3.0], np.float32),
    )
    config = LocatorTrainConfig(
        max_seconds=1.0,
        base=2,
        validate_every_s=1000.0,
        validation_stacks=1,
        synth=replace(locator_synth(), rows=16, cols=16, slices=(4, 5)),
    )
    out = folder / "locator.pt"
    return out, train(bank, out, config, "cpu", load_real(real))


def test_training_saves_a_checkpoint_that_loads_with_its_sha256(
    trained: tuple[Path, dict[str, object]],
) -> None:
    out, meta = trained
    assert isinstance(meta["steps"], int) and meta["steps"] >= 1
    assert "s1" in meta["last"]["real"]  # type: ignore[index]
    assert str(meta["validated_on"]).endswith("b")  # the last label map, held out
    model, loaded = load(out)
    assert loaded["sha256"] == meta["sha256"] and isinstance(model, Locator3d)
    assert out.with_name("locator.step" + str(meta["steps"]) + ".pt").exists()


def test_an_altered_checkpoint_is_refused(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    out, _ = trained
    copy = tmp_path / "locator.pt"
    copy.write_bytes(out.read_bytes() + b"\0")
    copy.with_suffix(".json").write_text(out.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="sha256"):
        load(copy)


def test_a_pair_is_served_with_the_recipe_and_both_checkpoints_unchanged(
    tmp_path: Path, trained: tuple[Path, dict[str, object]]
) -> None:
    from worker.models._nn.checkpoint import read_metadata, sha256_of
    from worker.models.fetal_brain.predict import StackSegmenter
    from worker.models.fetal_brain.score_pairs import CANDIDATE, served_pair

    refine = CANDIDATE.with_name("fetal_brain_refine.pt")
    recipe = dict(read_metadata(CANDIDATE)["postprocess"])
    weights = served_pair(CANDIDATE, refine, {**recipe, "core_mm": 12.0}, tmp_path / "pair")
    served = read_metadata(weights)["postprocess"]
    assert served["refine"] == "refine.pt" and served["core_mm"] == 12.0
    assert sha256_of(weights) == sha256_of(CANDIDATE)
    assert read_metadata(CANDIDATE)["postprocess"]["core_mm"] == recipe["core_mm"]  # untouched
    segmenter = StackSegmenter(weights)
    assert segmenter.refiner is not None and segmenter.recipe.core_mm == 12.0
    assert segmenter.locator is None
    # with a localiser beside them, served from its own checkpoint (sha256-checked)
    located = served_pair(CANDIDATE, refine, recipe, tmp_path / "three", trained[0])
    assert read_metadata(located)["postprocess"]["locator"] == "locator.pt"
    segmenter = StackSegmenter(located)
    assert segmenter.locator is not None
    assert segmenter.checkpoints["locator"] == sha256_of(trained[0])  # reported with the result
    from worker.models.fetal_brain.phantoms import make_fetal_brain_stack

    stack = make_fetal_brain_stack(820001).central(8)  # any stack will do: the suite's time
    spacing = (stack.slice_mm, stack.pixel_mm, stack.pixel_mm)
    assert segmenter.segment(stack.image, spacing).mask.shape == stack.image.shape


def test_the_gpu_second_stage_recipe_is_the_window_recipe_at_gpu_batch() -> None:
    from worker.models.fetal_brain.train_synth import (
        SynthTrainConfig,
        cpu_config,
        refine_config,
        refine_gpu_config,
    )

    cpu, gpu = refine_config(100.0), refine_gpu_config(100.0)
    assert gpu.synth == cpu.synth and gpu.window_mm == cpu.window_mm
    assert (gpu.batch_size, gpu.base, gpu.stacks_per_step) == (64, 16, 8)
    # The second stage sees a fetal face in most windows; the first stage's recipes do not.
    assert cpu.synth.face_fraction == 0.6 == cpu.validation_synth.face_fraction
    assert cpu_config(100.0).synth.face_fraction == SynthTrainConfig().synth.face_fraction == 0


@pytest.mark.parametrize("recipe", ["gpu", "cpu", "refine", "refine-gpu"])
def test_every_recipe_takes_the_seed_from_the_command_line(recipe: str) -> None:
    from worker.models.fetal_brain.train_synth import _config, _parser

    args = _parser().parse_args(["--recipe", recipe, "--seed", "7"])
    assert _config(args).seed == 7


def test_synthesis_training_uses_bf16_only_where_the_device_has_it() -> None:
    """bf16 autocast by default where ``bf16_native`` says so (AMX, Ampere); ``--fp32`` turns
    it off; the log and the metadata say which."""
    from worker.models._nn.hardware import bf16_native
    from worker.models.fetal_brain.train_synth import _config, _parser, precision_reason

    default = _config(_parser().parse_args(["--recipe", "cpu"]))
    forced = _config(_parser().parse_args(["--recipe", "cpu", "--fp32"]))
    assert default.bf16 and not forced.bf16
    assert precision_reason(forced, "cpu") == "--fp32"
    if not bf16_native("cpu"):
        assert "bf16" in precision_reason(default, "cpu")


def test_the_synthesis_options_reach_the_training_config() -> None:
    """The skull's and scalp's thickness, the shares of real anatomy and of faces, from the
    command line to the synthesis config of training (validation keeps the recipe's own)."""
    from worker.models.fetal_brain.train_synth import _config, _parser

    argv = ["--recipe", "refine", "--skull-mm", "0.4", "3.5", "--scalp-mm", "0.3", "5"]
    argv += ["--texture-fraction", "0.3", "--placenta-texture-fraction", "0.5"]
    argv += ["--face-fraction", "0.3"]
    config = _config(_parser().parse_args(argv))
    synth = config.synth
    assert synth.skull_mm == (0.4, 3.5) and synth.scalp_mm == (0.3, 5.0)
    assert synth.texture_fraction == 0.3 and synth.placenta_texture_fraction == 0.5
    assert synth.trunk_texture_fraction == 0.0 and synth.real_anatomy
    assert config.validation_synth.skull_mm == (1.0, 3.5)
    assert not config.validation_synth.real_anatomy
    assert synth.face_fraction == 0.3 and config.validation_synth.face_fraction == 0.6
