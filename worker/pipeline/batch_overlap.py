"""``medseg process`` with its stages overlapped, as nnU-Net exports one case while it
predicts the next: a loader thread decodes, routes and prepares the next series, the calling
thread runs the forward passes, an export thread finishes the previous series (the model's
post-processing, SEG, SR, report.json).

Both queues are bounded (``PREFETCH`` series decoded ahead, ``EXPORT_BEHIND`` waiting for
export), so memory stays that of a few series. A series' error lands on its own row and
the others go on; rows come back in input order, the same rows and files as the sequential
path. Only models that split ``predict`` (worker.core.registry.StagedModel) run their
post-processing behind; for the others ``predict`` runs whole in the calling thread.

The threads share the GIL: while the export thread runs Python (highdicom), the forward
pass waits for the GIL after each tensor operation, up to the interpreter's switch interval
(5 ms by default). For the length of the run the interval is lowered to
``SWITCH_INTERVAL_S`` (it is process-wide; restored afterwards).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.core.registry import Model, ModelSpec, StagedModel
from worker.pipeline.batch import (
    BatchRow,
    StepCounter,
    record_error,
    record_result,
    start_row,
    target_dir,
)
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import LoadedSeries, decode_series
from worker.pipeline.run import export, read_and_route

logger = logging.getLogger(__name__)

PREFETCH = 2
EXPORT_BEHIND = 2
SWITCH_INTERVAL_S = 0.0005


@dataclass
class _Series:
    """One series on its way through the stages; ``error`` stops it where it happened."""

    row: BatchRow
    target: Path
    series: LoadedSeries | None = None
    spec: ModelSpec | None = None
    model: Model | None = None
    staged: Any = None  # the model's prepared input, then its raw output
    output: Any = None  # ModelOutput of a model that is not staged
    timings: dict[str, float] = field(default_factory=dict)
    error: Exception | None = None


def _load(
    series_uid: str, paths: list[Path], out_dir: Path, models: ModelCache, steps: StepCounter
) -> _Series:
    """Loader thread: decode, route, load the model (once), prepare its input."""
    row = start_row(series_uid, paths)  # raises as in the sequential path
    item = _Series(row, target_dir(out_dir, row))
    try:
        return _prepare(item, paths, models)
    finally:
        steps.step()


def _prepare(item: _Series, paths: list[Path], models: ModelCache) -> _Series:
    row = item.row
    try:
        start = time.perf_counter()
        headers, item.spec = read_and_route(paths)
        row.model, row.model_version = item.spec.name, item.spec.version
        item.series = decode_series(headers)
        item.timings["load"] = time.perf_counter() - start
        item.model = models.get(item.spec)
        if isinstance(item.model, StagedModel):
            start = time.perf_counter()
            item.staged = item.model.prepare(item.series)
            item.timings["prepare"] = time.perf_counter() - start
    except Exception as exc:  # the series' own failure, reported on its row
        item.error = exc
    return item


def _forward(item: _Series, models: ModelCache) -> None:
    """Calling thread: the model's forward pass (or all of predict)."""
    if item.error is not None or item.model is None or item.series is None:
        return
    start = time.perf_counter()
    try:
        with models.autocast():
            if isinstance(item.model, StagedModel):
                item.staged = item.model.forward(item.staged)
            else:
                item.output = item.model.predict(item.series)
    except Exception as exc:
        item.error = exc
    item.timings["infer"] = time.perf_counter() - start


def _finish(item: _Series, steps: StepCounter) -> BatchRow:
    """Export thread: post-processing of a staged model, then SEG, SR and report.json."""
    try:
        return _export(item)
    finally:
        steps.step()


def _export(item: _Series) -> BatchRow:
    if item.error is None and item.model is not None and item.series is not None:
        assert item.spec is not None
        try:
            output = item.output
            if isinstance(item.model, StagedModel):
                start = time.perf_counter()
                output = item.model.finish(item.series, item.staged)
                item.timings["finish"] = time.perf_counter() - start
            result = export(
                item.series, output, item.spec, item.model, item.target, timings=item.timings
            )
        except Exception as exc:
            item.error = exc
        else:
            record_result(item.row, result)
    if item.error is not None:
        record_error(item.row, item.error)
    return item.row


def run_overlapped(
    groups: list[tuple[str, list[Path]]],
    out_dir: Path,
    models: ModelCache,
    steps: StepCounter,
) -> list[BatchRow]:
    rows: list[BatchRow] = []
    todo: Iterator[tuple[str, list[Path]]] = iter(groups)
    loads: deque[Future[_Series]] = deque()
    exports: deque[Future[BatchRow]] = deque()

    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(previous_interval, SWITCH_INTERVAL_S))
    with (
        ThreadPoolExecutor(1, thread_name_prefix="medseg-load") as loader,
        ThreadPoolExecutor(1, thread_name_prefix="medseg-export") as exporter,
    ):

        def load_ahead() -> None:
            while len(loads) < PREFETCH:
                group = next(todo, None)
                if group is None:
                    return
                loads.append(loader.submit(_load, *group, out_dir, models, steps))

        def collect_oldest() -> None:
            rows.append(exports.popleft().result())

        try:
            load_ahead()
            while loads:
                item = loads.popleft().result()
                load_ahead()
                _forward(item, models)
                steps.step()
                while len(exports) >= EXPORT_BEHIND:
                    collect_oldest()
                exports.append(exporter.submit(_finish, item, steps))
            while exports:
                collect_oldest()
        except BaseException:
            for load in loads:
                load.cancel()
            for pending in exports:
                pending.cancel()
            raise
        finally:
            sys.setswitchinterval(previous_interval)
    return rows
