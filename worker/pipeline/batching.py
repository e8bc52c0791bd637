"""The worker's batching policy (``MEDSEG_BATCH_MAX``, ``MEDSEG_BATCH_WAIT_MS``): how many
jobs of a single-frame model a worker process runs in one forward pass, and how long it waits
for them (worker.runtime.batch_jobs runs them, worker.pipeline.grouped has the stages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.core.settings import Settings

#: Jobs a CUDA worker runs together when ``MEDSEG_BATCH_MAX`` is unset: the U-Net
#: predictors' batch size on CUDA (worker.models._nn.predictor), one forward pass for 16
#: single-frame series.
CUDA_BATCH_MAX = 16


@dataclass(frozen=True)
class Batching:
    """How a worker process forms batches of jobs: up to ``max_jobs`` (1: off), waiting up to
    ``wait_s`` for more while the batch is not full."""

    max_jobs: int = 1
    wait_s: float = 0.0

    @classmethod
    def for_device(cls, settings: Settings, device: str) -> Batching:
        """The settings on ``device``: ``MEDSEG_BATCH_MAX`` unset is 16 on CUDA, 1 on CPU
        (where one frame per forward pass is fastest, docs/performance.md)."""
        default = CUDA_BATCH_MAX if device.startswith("cuda") else 1
        return cls(settings.batch_max or default, settings.batch_wait_ms / 1000.0)

    def note(self) -> str:
        """One line for the worker's start-up log."""
        if self.max_jobs <= 1:
            return "off (one job per forward pass)"
        return f"up to {self.max_jobs} jobs per forward pass, waiting {self.wait_s * 1000:g} ms"
