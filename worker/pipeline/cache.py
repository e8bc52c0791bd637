"""Models loaded once per process (per device), handed out to any thread."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

from worker.core.registry import Model, ModelSpec
from worker.core.settings import Precision
from worker.pipeline.precision import autocast, precision_note, resolve_precision


class ModelCache:
    """Loads each model once per process (per device) and hands out the same instance
    (from any thread). Forward passes run in ``precision`` where the device runs it
    natively, else in fp32 (a warning says so when the cache is built)."""

    def __init__(self, device: str, precision: Precision = "fp32") -> None:
        self.device = device
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
            return model
