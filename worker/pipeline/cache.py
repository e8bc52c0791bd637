"""Models loaded once per process (per device), handed out to any thread."""

from __future__ import annotations

import gc
import logging
import threading
import time
from contextlib import AbstractContextManager

from worker.core.registry import Model, ModelSpec
from worker.core.settings import Precision
from worker.pipeline.precision import autocast, precision_note, resolve_precision

logger = logging.getLogger(__name__)


class ModelCache:
    """Loads each model once per process (per device) and hands out the same instance
    (from any thread). Forward passes run in ``precision`` where the device runs it
    natively, else in fp32 (a warning says so when the cache is built)."""

    def __init__(self, device: str, precision: Precision = "fp32", *, settle: bool = False) -> None:
        self.device = device
        #: Whether loading a model settles the heap (``settle_heap``): in the processes that
        #: serve series (the worker, ``medseg process``), not where a cache is one part of a
        #: larger program (tests, notebooks), whose later cyclic garbage it would keep.
        self.settle = settle
        self.requested: Precision = precision
        self.precision: Precision = resolve_precision(device, precision)
        #: By name and version: a version installed in shadow (worker.shadow) is its own model.
        self._models: dict[tuple[str, str], Model] = {}
        self._lock = threading.Lock()

    def precision_note(self) -> str:
        """The precision forward passes run in, and why when it is not the one requested."""
        return precision_note(self.device, self.requested, self.precision)

    def autocast(self) -> AbstractContextManager[object]:
        """Enter around a model's ``predict`` or ``forward``, in the thread that runs it."""
        return autocast(self.device, self.precision)

    def get(self, spec: ModelSpec) -> Model:
        with self._lock:
            model = self._models.get((spec.name, spec.version))
            if model is None:
                model = spec.load(self.device)
                self._models[(spec.name, spec.version)] = model
                if self.settle:
                    settle_heap()
            return model


def settle_heap() -> None:
    """Collect, then exempt what is alive from later collections (``gc.freeze``).

    After a model's load the heap holds half a million long-lived objects (torch, scipy,
    highdicom, pydicom's dictionaries, the network). CPython's full collections walk all of
    them, and a 300-slice CT's reading and SEG trigger one per series: 0.3-0.4 s of its ~6 s
    on a 2-core Xeon, 0-34 ms once they are frozen (docs/performance.md). Frozen objects
    are still freed by reference counting; only cyclic garbage among them would stay, and
    what is frozen here is reachable (collected first) and mostly lives as long as the
    process: the modules, the models; of the job that loads a model, its headers and
    pixels (freed by reference counting when it ends, tests/unit/worker/pipeline/
    test_heap.py). Once per model and process."""
    start = time.perf_counter()
    gc.collect()
    gc.freeze()
    logger.debug(
        "heap settled: %d objects frozen in %.0f ms",
        gc.get_freeze_count(),
        (time.perf_counter() - start) * 1000,
    )
