"""A slice with its neighbours as channels (``context.py``): the same neighbours in training,
validation and serving, and a single-channel network widened to it unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worker.models._nn import checkpoint
from worker.models._nn.predictor import UNetPredictor
from worker.models._nn.unet import UNet
from worker.models.fetal_brain.context import neighbour_indices, widen_first_layer, with_context
from worker.models.fetal_brain.predict import stack_probabilities

CONFIG = {"arch": "unet", "base": 4, "depth": 2, "input_rows": 32, "input_cols": 32}


def test_each_slice_takes_its_neighbours_and_the_ends_stand_in_for_missing_ones() -> None:
    assert neighbour_indices(4, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert neighbour_indices(2, 2).tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
    assert neighbour_indices(3, 0).tolist() == [[0], [1], [2]]


def test_numpy_and_torch_stacks_get_the_same_channels() -> None:
    stack = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    wide = with_context(stack, 1)
    assert wide.shape == (4, 3, 2, 3)
    assert (wide[:, 1] == stack).all()  # the slice itself in the middle
    assert (wide[1:, 0] == stack[:-1]).all() and (wide[:-1, 2] == stack[1:]).all()
    assert (wide[0, 0] == stack[0]).all() and (wide[-1, 2] == stack[-1]).all()
    assert torch.equal(with_context(torch.from_numpy(stack), 1), torch.from_numpy(wide))
    assert with_context(stack, 0).shape == (4, 1, 2, 3)
    # A batch of stacks: each slice takes its own stack's neighbours, never the next stack's.
    batch = np.stack([stack, stack + 100])
    assert (with_context(batch, 1) == np.stack([wide, wide + 100])).all()
    assert torch.equal(
        with_context(torch.from_numpy(batch), 1), torch.from_numpy(with_context(batch, 1))
    )


def test_a_widened_network_computes_what_the_single_channel_one_did() -> None:
    torch.manual_seed(0)
    single, wide = UNet(1, base=4, depth=2).eval(), UNet(3, base=4, depth=2).eval()
    wide.load_state_dict(widen_first_layer(single.state_dict(), wide.state_dict()))
    stack = torch.rand(5, 32, 32)
    with torch.no_grad():
        assert torch.allclose(single(stack[:, None]), wide(with_context(stack, 1)), atol=1e-6)


def test_a_context_checkpoint_is_served_with_the_neighbours_it_was_trained_on(
    tmp_path: Path,
) -> None:
    torch.manual_seed(1)
    single = UNet(1, base=4, depth=2).eval()
    wide, wider = UNet(3, base=4, depth=2).eval(), UNet(5, base=4, depth=2).eval()
    wide.load_state_dict(widen_first_layer(single.state_dict(), wide.state_dict()))
    wider.load_state_dict(widen_first_layer(single.state_dict(), wider.state_dict()))
    checkpoint.save(single, CONFIG, {}, tmp_path / "single.pt")
    checkpoint.save(wide, {**CONFIG, "in_channels": 3}, {}, tmp_path / "wide.pt")
    checkpoint.save(wider, {**CONFIG, "in_channels": 5}, {}, tmp_path / "wider.pt")
    one, three = UNetPredictor(tmp_path / "single.pt"), UNetPredictor(tmp_path / "wide.pt")
    five = UNetPredictor(tmp_path / "wider.pt")  # more channels than OpenCV resizes at once
    assert (one.in_channels, three.in_channels, five.in_channels) == (1, 3, 5)
    stack = np.random.default_rng(2).integers(0, 255, (6, 40, 48), dtype=np.uint8)
    for flips in (False, True):
        a = stack_probabilities(one, stack, flips)
        assert a.shape == (6, 40, 48)
        for other in (three, five):
            np.testing.assert_allclose(a, stack_probabilities(other, stack, flips), atol=1e-5)
    # Trained further, the neighbours count: a stack whose slices differ serves differently.
    with torch.no_grad():
        wide.down[0][0].weight[:, 0] += 0.5
    checkpoint.save(wide, {**CONFIG, "in_channels": 3}, {}, tmp_path / "trained.pt")
    trained = stack_probabilities(UNetPredictor(tmp_path / "trained.pt"), stack, False)
    assert not np.allclose(trained, stack_probabilities(one, stack, False), atol=1e-3)


def test_a_phantom_slice_mixed_into_a_context_batch_stands_in_for_its_neighbours(
    tmp_path: Path,
) -> None:
    from worker.models.fetal_brain.train_synth import PhantomPool

    rng = np.random.default_rng(3)
    np.savez_compressed(
        tmp_path / "phantoms.npz",
        images=rng.integers(0, 255, (4, 40, 40), dtype=np.uint8),
        masks=np.full((4, 40, 40), 255, np.uint8),
    )
    pool = PhantomPool(tmp_path / "phantoms.npz", "cpu")
    x, y = pool.mix(torch.zeros(8, 3, 32, 32), torch.zeros(8, 1, 32, 32), 0.5, torch.Generator())
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, 1, 32, 32)
    assert torch.equal(x[:4, 0], x[:4, 1]) and torch.equal(x[:4, 1], x[:4, 2])
    assert float(x[:4].max()) > 0 and float(x[4:].abs().max()) == 0
