"""Fold-model ensembles: one checkpoint, one sha256, served like one U-Net; members chosen on
their tuning folds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.models._nn import checkpoint
from worker.models._nn.ensemble import ensemble_entry, pick_members
from worker.models._nn.folds import grouped_folds
from worker.models._nn.predictor import UNetPredictor
from worker.models._nn.unet import UNet, UNetEnsemble


def test_an_ensemble_is_the_mean_of_its_members_logits() -> None:
    torch.manual_seed(0)
    members = [UNet(base=4, depth=2).eval() for _ in range(3)]
    ensemble = UNetEnsemble.of(members, base=4, depth=2).eval()
    x = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in members]).mean(0)
        assert torch.allclose(ensemble(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        UNetEnsemble(0)


def test_an_ensemble_checkpoint_loads_and_serves(tmp_path: Path) -> None:
    members = [UNet(base=4, depth=2) for _ in range(2)]
    config = {"arch": "unet-ensemble", "members": 2, "base": 4, "depth": 2,
              "input_rows": 16, "input_cols": 24}  # fmt: skip
    weights = tmp_path / "e.pt"
    digest = checkpoint.save(UNetEnsemble.of(members, 4, 2), config, {"model": "t"}, weights)
    model, meta = checkpoint.load(weights, "cpu")
    assert isinstance(model, UNetEnsemble) and len(model.members) == 2
    assert meta["sha256"] == digest
    probs = UNetPredictor(weights, "cpu").probabilities([torch.zeros(30, 40).byte().numpy()])
    assert probs[0].shape == (30, 40)
    bad = {**config, "arch": "transformer"}
    with pytest.raises(checkpoint.CheckpointError, match="unknown architecture"):
        checkpoint.build(bad)


def test_members_by_their_tuning_error_without_outliers_and_capped() -> None:
    assert pick_members([2.0, 1.5, 1.8, 1.6, 9.0]) == [1, 3, 2, 0]  # 9.0 > 1.5 x median
    assert pick_members([2.0, 1.5, 1.8, 1.6, 9.0], max_members=2) == [1, 3]
    assert pick_members([3.0]) == [0]
    with pytest.raises(ValueError):
        pick_members([])


def test_the_ensembles_metadata_names_its_folds_from_one_and_its_rule() -> None:
    entry = ensemble_entry([1, 3], "their own fold's Dice", 2, error="1 - Dice")
    assert entry == {
        "members": [2, 4],
        "rule": "fold models by their own fold's Dice, best first; none with an error "
        "(1 - Dice) worse than 1.5 x the median fold's; at most 2",
        "combination": "mean of the members' logits",
    }
    uncapped = ensemble_entry([0], "their own tuning fold's HC error", None)["rule"]
    assert uncapped == (
        "fold models by their own tuning fold's HC error, best first; none worse than 1.5 x "
        "the median fold's"
    )


def test_grouped_folds_keep_groups_together_and_even() -> None:
    groups = ["a", "a", "b", "c", "c", "c", "d", "e"]
    folds = grouped_folds(groups, 3, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(len(groups)))
    for fold in folds:
        for other in folds:
            if other is not fold:
                assert not {groups[i] for i in fold} & {groups[i] for i in other}
    assert max(map(len, folds)) - min(map(len, folds)) <= 2
    assert grouped_folds(groups, 3, seed=1) == folds
    with pytest.raises(ValueError, match="5 patients or subjects"):
        grouped_folds(groups, 6)
