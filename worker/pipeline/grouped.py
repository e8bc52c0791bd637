"""Several series of one single-frame model through one forward pass (cross-series batching).

The stages of ``worker.pipeline.run.run_loaded``, split so that a worker can run them over a
group of series: ``load_prepared`` (read, decode, the model's ``prepare``) per series,
``forward_group`` once for all of them, ``finish_loaded`` (the model's ``finish``, SEG, SR,
report.json) per series. Each function raises the series' own error; the caller decides
what an error means for the others (worker.runtime.batch_jobs). A series gets the same
result as through ``run_series``: the network sees the same inputs, only more of them at
once (bit for bit the same where the device's batch size is 1, as on CPU).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.core.registry import BatchedModel, ModelSpec, StagedModel
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import LoadedSeries
from worker.pipeline.run import SeriesResult, export, load_and_route

if TYPE_CHECKING:
    from worker.ops.dating import Dating


@dataclass
class Loaded:
    """One series of a group, read and prepared for the model's forward pass."""

    series: LoadedSeries
    spec: ModelSpec
    model: StagedModel
    prepared: Any
    timings: dict[str, float] = field(default_factory=dict)


def groupable(spec: ModelSpec, models: ModelCache) -> StagedModel | None:
    """The loaded model when ``spec``'s jobs may run as a group (a single-frame model whose
    ``predict`` is staged), else None."""
    if not spec.batch_series:
        return None
    model = models.get(spec)
    return model if isinstance(model, StagedModel) else None


def load_prepared(
    paths: Sequence[Path],
    spec: ModelSpec,
    models: ModelCache,
    *,
    entered_ga: Dating | None = None,
) -> Loaded:
    """Read, decode and ``prepare`` one series of the group (its ``load``, ``load_model`` and
    ``preprocess`` timed, as ``run_series`` times them). ``spec``: a groupable one, already
    ``runnable`` (worker.pipeline.run)."""
    series, _, load_seconds = load_and_route(paths, spec)
    series.entered_ga = entered_ga
    start = time.perf_counter()
    model = groupable(spec, models)
    if model is None:
        raise TypeError(f"{spec.name} does not run in groups")
    timings = {"load": load_seconds, "load_model": time.perf_counter() - start}
    start = time.perf_counter()
    prepared = model.prepare(series)
    timings["preprocess"] = time.perf_counter() - start
    return Loaded(series, spec, model, prepared, timings)


def forward_group(model: StagedModel, group: Sequence[Loaded], models: ModelCache) -> list[Any]:
    """The forward pass of every series in ``group`` at once, under the cache's autocast;
    each series' ``infer`` timing is its share of it, by frames."""
    start = time.perf_counter()
    with models.autocast():
        if isinstance(model, BatchedModel):
            raws = model.forward_batch([item.prepared for item in group])
        else:  # a staged model without a batched forward: one series after the other
            raws = [model.forward(item.prepared) for item in group]
    seconds = time.perf_counter() - start
    frames = sum(len(item.series.frames) for item in group) or 1
    for item in group:
        item.timings["infer"] = seconds * len(item.series.frames) / frames
    return raws


def finish_loaded(item: Loaded, raw: Any, out_dir: Path) -> SeriesResult:
    """The model's ``finish``, then SEG, SR and report.json in ``out_dir``."""
    start = time.perf_counter()
    output = item.model.finish(item.series, raw)
    item.timings["postprocess"] = time.perf_counter() - start
    return export(item.series, output, item.spec, item.model, out_dir, timings=item.timings)
