"""Model registry: every module in ``worker.models`` exposing ``SPEC`` is a model, and so is
every module named in ``MEDSEG_MODEL_PLUGINS``.

Adding a model is adding one module with a ``SPEC = ModelSpec(...)``.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from worker.precision import Precision, autocast

if TYPE_CHECKING:
    from worker.loading import LoadedSeries
    from worker.outputs import ModelOutput
    from worker.routing import SeriesTags

Queue = Literal["cpu", "gpu"]


class Model(Protocol):
    """A loaded model: built once per worker process, called for many series."""

    def predict(self, series: LoadedSeries) -> ModelOutput: ...


@runtime_checkable
class StagedModel(Model, Protocol):
    """A model whose ``predict`` is ``finish(series, forward(prepare(series)))``, so that
    ``medseg process`` can prepare the next series and finish the previous one in other
    threads while ``forward`` runs. ``prepare`` and ``finish`` must not touch state that
    ``forward`` changes; the values passed between the stages are the model's own."""

    def prepare(self, series: LoadedSeries) -> Any: ...

    def forward(self, prepared: Any) -> Any: ...

    def finish(self, series: LoadedSeries, raw: Any) -> ModelOutput: ...


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    queue: Queue
    description: str
    accepts: Callable[[SeriesTags], bool]
    load: Callable[[str], Model]  # device -> model
    algorithm_family: str = "ArtificialIntelligence"  # a CID 7162 keyword
    priority: int = 0
    weights_sha256: str | None = None
    time_limit_seconds: int | None = None  # None: MEDSEG_JOB_TIME_LIMIT_SECONDS


@lru_cache(maxsize=1)
def _discover() -> tuple[ModelSpec, ...]:
    import worker.models as package
    from worker.settings import get_settings

    specs: list[ModelSpec] = []
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, ModelSpec):
            specs.append(spec)
    for name in get_settings().model_plugins:
        spec = getattr(importlib.import_module(name), "SPEC", None)
        if not isinstance(spec, ModelSpec):
            raise RuntimeError(f"MEDSEG_MODEL_PLUGINS: module {name} has no SPEC = ModelSpec(...)")
        specs.append(spec)
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        raise RuntimeError(f"duplicate model names in worker.models: {names}")
    return tuple(specs)


def all_specs() -> tuple[ModelSpec, ...]:
    return _discover()


def get_spec(name: str) -> ModelSpec:
    for spec in _discover():
        if spec.name == name:
            return spec
    raise KeyError(f"no model named {name!r}; known: {[s.name for s in _discover()]}")


class ModelCache:
    """Loads each model once per process (per device) and hands out the same instance
    (from any thread)."""

    def __init__(self, device: str, precision: Precision = "fp32") -> None:
        self.device = device
        self.precision: Precision = precision
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()

    def autocast(self) -> AbstractContextManager[object]:
        """Enter around a model's ``predict`` or ``forward``, in the thread that runs it."""
        return autocast(self.device, self.precision)

    def get(self, spec: ModelSpec) -> Model:
        with self._lock:
            model = self._models.get(spec.name)
            if model is None:
                model = spec.load(self.device)
                self._models[spec.name] = model
            return model
