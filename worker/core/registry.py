"""Model registry: every folder in ``worker.models`` whose ``serve`` module exposes ``SPEC`` is a
model, and so is every module named in ``MEDSEG_MODEL_PLUGINS``.

Adding a model is adding one folder ``worker/models/<name>/`` with a ``serve.py`` holding
``SPEC = ModelSpec(...)``; its training, evaluation and phantom commands are named in the spec
and imported only when ``medseg train|evaluate|phantoms|pack`` runs them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from worker.core.card import ModelCard, ValidationStatus
    from worker.core.tags import SeriesTags
    from worker.export.outputs import ModelOutput
    from worker.pipeline.loading import LoadedSeries

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


@runtime_checkable
class BatchedModel(StagedModel, Protocol):
    """A staged model that runs the prepared inputs of several series in one forward pass:
    ``forward_batch(items)[k]`` is what ``forward(items[k])`` returns (the same arrays where
    the device's batch size is 1), so each series is finished as if it ran alone."""

    def forward_batch(self, prepared: Sequence[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    queue: Queue
    description: str
    accepts: Callable[[SeriesTags], bool]
    load: Callable[[str], Model]  # device -> model
    #: (device, checkpoint) -> the model with other weights: what a version installed in
    #: shadow (worker.shadow) loads. None: the model cannot take other weights.
    load_weights: Callable[[str, Path], Model] | None = field(default=None, hash=False)
    algorithm_family: str = "ArtificialIntelligence"  # a CID 7162 keyword
    priority: int = 0
    weights_sha256: str | None = None
    time_limit_seconds: int | None = None  # None: MEDSEG_JOB_TIME_LIMIT_SECONDS
    # Where the weights are (the worker), ``runnable()`` false means: run ``fallback`` instead.
    # Routing never calls it, so the gateway decides without looking for files.
    runnable: Callable[[], bool] | None = None
    fallback: str | None = None  # a model name
    # ``medseg train|evaluate|phantoms|pack NAME``: NAME -> "package.module:function" (the
    # signatures are in worker.core.commands), imported only when the command runs.
    train: Mapping[str, str] = field(default_factory=dict, hash=False)
    evaluate: Mapping[str, str] = field(default_factory=dict, hash=False)
    phantoms: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: Single-frame series (US, CR): a worker may claim several queued jobs of this model and
    #: run their frames in one forward pass (worker.runtime.batch_jobs, ``MEDSEG_BATCH_MAX``).
    batch_series: bool = False
    pack: Mapping[str, str] = field(default_factory=dict, hash=False)
    # What the model is for and how far its results may be trusted (worker.core.card).
    card: ModelCard | None = field(default=None, hash=False)

    def validation_for(self, weights_sha256: str | None) -> ValidationStatus:
        """The status of a result made with ``weights_sha256`` (the checkpoint loaded, None
        for a model without weights): the card's verdict, ``unvalidated`` without a card."""
        return "unvalidated" if self.card is None else self.card.status_for(weights_sha256)

    @property
    def research_only(self) -> bool:
        """Shipped with no validation on real patient data (its card: phantom-only,
        validated-synthetic): off unless ``MEDSEG_RESEARCH_MODELS`` names it. A model with
        no card (a plugin) was named by the operator who installed it, so it runs."""
        from worker.core.card import not_for_clinical_use

        return self.card is not None and not_for_clinical_use(self.card.validation)


@lru_cache(maxsize=1)
def _discover() -> tuple[ModelSpec, ...]:
    import worker.models as package
    from worker.core.settings import get_settings

    specs: list[ModelSpec] = []
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue  # shared code, not a model
        name = f"{package.__name__}.{module_info.name}"
        module = importlib.import_module(f"{name}.serve" if module_info.ispkg else name)
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, ModelSpec):
            specs.append(spec)
    specs.sort(key=lambda spec: spec.name)
    for name in get_settings().model_plugins:
        spec = getattr(importlib.import_module(name), "SPEC", None)
        if not isinstance(spec, ModelSpec):
            raise RuntimeError(f"MEDSEG_MODEL_PLUGINS: module {name} has no SPEC = ModelSpec(...)")
        specs.append(spec)
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        raise RuntimeError(f"duplicate model names in worker.models: {', '.join(names)}")
    return tuple(specs)


def all_specs() -> tuple[ModelSpec, ...]:
    return _discover()


def off_reason(spec: ModelSpec) -> str | None:
    """Why ``spec`` does not run in this service, or None when it does: a research-only
    model (``ModelSpec.research_only``) that ``MEDSEG_RESEARCH_MODELS`` does not name."""
    from worker.core.settings import get_settings

    if not spec.research_only or spec.name in get_settings().research_models:
        return None
    status = spec.card.validation if spec.card is not None else "unvalidated"
    return (
        f"{spec.name} {spec.version} is off: its validation status is {status} (never "
        f"validated on real patient data), so it does not run unless "
        f'MEDSEG_RESEARCH_MODELS names it (["{spec.name}"]; results NOT FOR CLINICAL USE)'
    )


def get_spec(name: str) -> ModelSpec:
    for spec in _discover():
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in _discover())
    raise KeyError(f"no model named {name}; known: {known}")
