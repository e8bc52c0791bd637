"""Channels-last training on a CPU: the same arithmetic as the default layout, to rounding,
and checkpoints saved in the default layout whatever the training layout."""

from __future__ import annotations

from pathlib import Path

import torch

from worker.models._nn import checkpoint
from worker.models._nn.budget import Budget, BudgetTrainer
from worker.models._nn.layout import memory_format, placed
from worker.models._nn.unet import UNet


def test_channels_last_on_a_cpu_the_default_layout_on_cuda() -> None:
    assert memory_format("cpu") == torch.channels_last
    assert memory_format(torch.device("cpu")) == torch.channels_last
    assert memory_format("cuda") == torch.contiguous_format
    assert memory_format("cuda:1") == torch.contiguous_format


def test_placed_puts_the_weights_in_the_devices_layout() -> None:
    from worker.models.fetal_brain.locator import Locator3d

    conv = next(p for p in placed(UNet(base=4, depth=2), "cpu").parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    volume = placed(Locator3d(4), "cpu", volumetric=True)
    conv3d = next(p for p in volume.parameters() if p.dim() == 5)
    assert conv3d.is_contiguous(memory_format=torch.channels_last_3d)


def _trained(layout: torch.memory_format) -> tuple[BudgetTrainer, float]:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 32, 48), dtype=torch.uint8)
    masks = torch.zeros_like(images)
    masks[:, 8:24, 12:36] = 255
    budget = Budget(epochs=1, max_seconds=1e9, batch_size=4, learning_rate=1e-3, bf16=False)
    trainer = BudgetTrainer(
        UNet(base=4, depth=2), budget, "cpu", len(images), lambda x, y, g: (x, y), layout=layout
    )
    loss = trainer.epoch(images, masks, lambda: None)
    return trainer, loss


def test_a_channels_last_epoch_trains_as_the_default_layout_does() -> None:
    default, default_loss = _trained(torch.contiguous_format)
    nhwc, nhwc_loss = _trained(torch.channels_last)
    conv = next(p for p in nhwc.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert abs(nhwc_loss - default_loss) < 1e-5
    for (name, a), b in zip(
        default.model.state_dict().items(), nhwc.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5), name


def test_checkpoints_are_saved_in_the_default_layout(tmp_path: Path) -> None:
    trainer, _ = _trained(torch.channels_last)
    out = tmp_path / "w.pt"
    checkpoint.save(trainer.model, {"arch": "unet", "base": 4, "depth": 2}, {}, out)
    state = torch.load(out, weights_only=True)["state_dict"]
    assert all(t.is_contiguous() for t in state.values())
    assert any(t.dim() == 4 for t in state.values())


def test_the_3d_localiser_gives_the_same_logits_channels_last() -> None:
    from worker.models.fetal_brain.locator import Locator3d, logits

    torch.manual_seed(0)
    model = Locator3d(base=4).eval()
    volumes = torch.rand(2, 10, 32, 32)
    with torch.no_grad():
        default = model(torch.nn.functional.pad((volumes - 0.25) / 0.25, (0, 0, 0, 0, 0, 2),
                                                value=-1.0)[:, None])[:, 0, :10]  # fmt: skip
        nhwc = logits(model.to(memory_format=torch.channels_last_3d), volumes)
    assert memory_format("cpu", volumetric=True) == torch.channels_last_3d
    assert torch.allclose(default, nhwc, atol=1e-5)
