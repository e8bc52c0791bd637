"""A model plugin for tests (``MEDSEG_MODEL_PLUGINS=["tests.plugins.sleepy"]``): it takes CT
series described as ``SLEEP TEST`` and sleeps, so time limits can be tested on a real worker."""

from __future__ import annotations

import time

from worker.core.registry import ModelSpec
from worker.export.outputs import ModelOutput
from worker.pipeline.loading import LoadedSeries

SLEEP_SECONDS = 600.0


class SleepyModel:
    def predict(self, series: LoadedSeries) -> ModelOutput:
        time.sleep(SLEEP_SECONDS)
        raise AssertionError("the time limit should have stopped this model")


SPEC = ModelSpec(
    name="sleep-test",
    version="0",
    queue="cpu",
    description="test plugin: sleeps until its time limit",
    accepts=lambda tags: tags.modality == "CT" and tags.series_description == "SLEEP TEST",
    load=lambda device: SleepyModel(),
    algorithm_family="ManualProcessing",
    priority=100,
)
