"""The model cache settles the heap once a model is loaded: what is alive is frozen out of
later full collections, and what a job leaves is still freed by reference counting."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.factories import chest_series
from worker.core.registry import ModelSpec
from worker.pipeline import cache as cache_module
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import load_series


class _Model:
    def predict(self, series: object) -> None:
        return None


def _spec() -> ModelSpec:
    return ModelSpec(
        "heap-test",
        "1",
        "cpu",
        "a model that loads nothing",
        accepts=lambda t: False,
        load=lambda device: _Model(),  # type: ignore[arg-type,return-value]
    )


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process goes on collecting as before


@pytest.mark.usefixtures("thawed")
def test_a_load_freezes_what_is_alive_and_a_second_get_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled: list[None] = []
    real = cache_module.settle_heap
    monkeypatch.setattr(cache_module, "settle_heap", lambda: settled.append(real()))
    cache, spec = ModelCache("cpu", settle=True), _spec()
    assert gc.get_freeze_count() == 0
    model = cache.get(spec)
    assert cache.get(spec) is model
    assert len(settled) == 1  # once per model
    assert gc.get_freeze_count() > 1000  # the modules and everything else alive


@pytest.mark.usefixtures("thawed")
def test_a_series_alive_at_the_freeze_is_still_freed(tmp_path: Path) -> None:
    series = load_series(chest_series(tmp_path, seed=2, slices=4))
    alive = [weakref.ref(ds) for ds in series.datasets] + [weakref.ref(series)]
    ModelCache("cpu", settle=True).get(_spec())
    del series
    assert not any(ref() is not None for ref in alive)  # no collection needed


@pytest.mark.usefixtures("thawed")
def test_a_cache_that_does_not_settle_leaves_the_heap_alone() -> None:
    ModelCache("cpu").get(_spec())
    assert gc.get_freeze_count() == 0
