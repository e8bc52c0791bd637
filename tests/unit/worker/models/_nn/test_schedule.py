"""The time budget and the device choose each recipe's schedule (worker.models._nn.schedule,
fetal_head.schedule, lung_cxr.schedule): the selection logic, not how long anything takes."""

from __future__ import annotations

import argparse
import math

import pytest

from worker.models._nn.schedule import TRAIN_SHARE, Plan, choose, device_kind
from worker.models._nn.train_args import input_size
from worker.models.fetal_head.schedule import fetal_head_schedule, train_frames, tuning_epochs
from worker.models.lung_cxr.schedule import lung_cxr_schedule

#: The HC18 frames not held out (581 train + 61 tune with the fixed seed-0 split).
DEVELOPMENT = 642


def test_device_kinds() -> None:
    assert device_kind("cuda") == device_kind("cuda:1") == "cuda"
    assert device_kind("cpu") == device_kind("mps") == "cpu"


def test_fetal_head_on_a_cpu_without_a_budget_is_the_2_0_0_recipe() -> None:
    s = fetal_head_schedule("cpu", math.inf, DEVELOPMENT)
    assert s.size == (160, 240) and s.length == 60
    assert (s.plan.folds, s.plan.ensemble, s.plan.batch_size) == (1, False, 16)
    assert s.budget_seconds == 7200.0
    assert s.run_seconds == pytest.approx(7200 * 0.9)  # one run, 10 % kept for the rest


def test_fetal_head_on_a_cpu_for_hours_cross_validates_and_ensembles() -> None:
    s = fetal_head_schedule("cpu", 5 * 3600, DEVELOPMENT)
    assert s.size == (160, 240) and (s.plan.folds, s.plan.ensemble) == (5, True)
    assert 40 <= s.length <= 60


def test_fetal_head_on_a_gpu_in_minutes_is_large_five_fold_and_an_ensemble() -> None:
    s = fetal_head_schedule("cuda", 330, DEVELOPMENT)
    assert s.size == (320, 480) and (s.plan.folds, s.plan.ensemble) == (5, True)
    assert s.plan.runs == 5 and s.run_seconds == pytest.approx(330 * 0.9 / 5)
    # the epochs fill each run at the plan's throughput, within its bounds
    expected = int(330 * 0.9 * TRAIN_SHARE / 5 * 1100 / train_frames(DEVELOPMENT, 5))
    assert s.length == min(expected, 150) and s.length >= 40
    assert "320x480" in s.why and "5 subject-grouped folds" in s.why


def test_shorter_gpu_budgets_give_fewer_folds_then_smaller_inputs() -> None:
    chosen = [fetal_head_schedule("cuda", t, DEVELOPMENT) for t in (600, 330, 100, 40, 5)]
    folds = [s.plan.folds for s in chosen]
    assert folds == sorted(folds, reverse=True) and folds[0] == 5 and folds[-1] == 1
    assert chosen[-1].size == (160, 240) and chosen[-1].length >= 1  # the last plan, always
    assert all(s.size == (320, 480) for s in chosen[:-1])
    assert fetal_head_schedule("cuda", 1e6, DEVELOPMENT).length == 150  # the plan's cap


def test_overrides_apply_to_every_plan() -> None:
    s = fetal_head_schedule("cuda", 330, DEVELOPMENT, folds=2, max_epochs=3, batch_size=4)
    assert (s.plan.folds, s.plan.ensemble, s.length, s.plan.batch_size) == (2, True, 3, 4)
    single = fetal_head_schedule("cuda", 330, DEVELOPMENT, folds=1, ensemble=True)
    assert (single.plan.folds, single.plan.ensemble) == (1, False)  # nothing to ensemble
    assert fetal_head_schedule("cuda", 330, DEVELOPMENT, folds=0).plan.folds == 1
    best_fold = fetal_head_schedule("cuda", 330, DEVELOPMENT, ensemble=False)
    assert (best_fold.plan.folds, best_fold.plan.ensemble, best_fold.plan.runs) == (5, False, 5)


def test_seeds_train_the_fixed_split_several_times_and_ship_their_ensemble() -> None:
    s = fetal_head_schedule("cpu", 3 * 7200, DEVELOPMENT, seeds=3)
    assert (s.plan.folds, s.plan.seeds, s.plan.ensemble, s.plan.runs) == (1, 3, True, 3)
    assert s.run_seconds == pytest.approx(3 * 7200 * 0.9 / 3)  # the budget shared by the runs
    assert s.length == 60 and "the fixed train/tune split, 3 seeds, their ensemble" in s.why
    # the same budget as one run gives each seed a third of the epochs
    one = fetal_head_schedule("cpu", 3600, DEVELOPMENT)
    three = fetal_head_schedule("cpu", 3600, DEVELOPMENT, seeds=3)
    assert (
        three.length == int(3600 * 0.9 * TRAIN_SHARE / 3 * 13.0 / train_frames(DEVELOPMENT, 1))
        and three.length < one.length
    )
    assert fetal_head_schedule("cpu", 3600, DEVELOPMENT, seeds=1).plan.seeds == 1
    single = fetal_head_schedule("cpu", 3600, DEVELOPMENT, seeds=2, ensemble=False)
    assert (single.plan.runs, single.plan.ensemble) == (2, False)  # the best run ships
    assert "the best run shipped" in single.why
    with pytest.raises(ValueError, match="fixed split"):
        fetal_head_schedule("cpu", 3600, DEVELOPMENT, seeds=3, folds=5)
    with pytest.raises(ValueError, match="seeds 0"):
        fetal_head_schedule("cpu", 3600, DEVELOPMENT, seeds=0)


def test_an_input_size_overrides_every_plan_and_scales_its_throughput() -> None:
    default = fetal_head_schedule("cpu", 2400, DEVELOPMENT, folds=1)
    larger = fetal_head_schedule("cpu", 2400, DEVELOPMENT, folds=1, input_size=(320, 480))
    assert default.size == (160, 240) and larger.size == (320, 480)
    # four times the pixels: a quarter of the images a second, a quarter of the epochs
    assert larger.plan.images_per_second == pytest.approx(default.plan.images_per_second / 4)
    assert larger.length == pytest.approx(default.length / 4, abs=1)
    assert "320x480" in larger.why and "scaled by pixels" in larger.plan.throughput_source
    film = lung_cxr_schedule("cuda", 600, input_size=(320, 320))
    assert film.size == (320, 320)
    same = fetal_head_schedule("cuda", 330, DEVELOPMENT, input_size=(320, 480))
    assert same.plan == fetal_head_schedule("cuda", 330, DEVELOPMENT).plan  # as planned
    with pytest.raises(ValueError, match="multiple of 16"):
        fetal_head_schedule("cpu", 4800, DEVELOPMENT, input_size=(300, 480))


def test_the_input_size_flag() -> None:
    assert input_size("320x480") == (320, 480) and input_size("256") == (256, 256)
    for bad in ("320x", "300x480", "0", "256x256x3", "big"):
        with pytest.raises(argparse.ArgumentTypeError):
            input_size(bad)


def test_tuning_epochs_every_epoch_on_cpu_from_halfway_on_gpu() -> None:
    cpu = fetal_head_schedule("cpu", math.inf, DEVELOPMENT)
    assert tuning_epochs(cpu) == frozenset(range(1, 61))
    gpu = fetal_head_schedule("cuda", 330, DEVELOPMENT)
    epochs = tuning_epochs(gpu)
    assert gpu.length in epochs and min(epochs) >= gpu.length // 2
    assert 8 <= len(epochs) <= 14


def test_train_frames_per_run() -> None:
    assert train_frames(DEVELOPMENT, 5) == 513
    assert train_frames(DEVELOPMENT, 1) == 578  # the fixed split keeps a tenth for tuning


def test_lung_cxr_on_a_cpu_is_the_2_1_0_recipe_and_the_2_0_0_one_when_short() -> None:
    s = lung_cxr_schedule("cpu", math.inf)
    assert s.size == (160, 160) and s.length == 3000 and s.plan.batch_size == 8
    assert (s.plan.folds, s.plan.ensemble, s.plan.final, s.plan.runs) == (5, True, False, 5)
    short = lung_cxr_schedule("cpu", 2 * 3600)
    assert short.size == (160, 160) and short.length == 1000
    assert (short.plan.folds, short.plan.ensemble, short.plan.final) == (5, False, True)


def test_lung_cxr_on_a_gpu_ensembles_the_folds_at_256() -> None:
    s = lung_cxr_schedule("cuda", 270)
    assert s.size == (256, 256) and (s.plan.folds, s.plan.ensemble) == (5, True)
    assert not s.plan.final and s.plan.runs == 5
    assert 1000 <= s.length <= 3000
    final = lung_cxr_schedule("cuda", 270, ensemble=False)
    assert final.plan.final and final.plan.runs == 6  # then a final run on every film ships
    only = lung_cxr_schedule("cpu", math.inf, folds=0, max_steps=2)
    assert (only.plan.runs, only.length) == (1, 2)


def test_no_plan_for_the_device_kind_is_an_error() -> None:
    plans = (Plan("cuda", 8, 8, 1, False, False, "step", 1, 2, 1, 1.0),)
    with pytest.raises(ValueError, match="no training plan for a cpu device"):
        choose(plans, "cpu", 10.0, 1)
