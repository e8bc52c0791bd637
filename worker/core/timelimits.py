"""How long a job may run: per model, with the broker's redelivery timeout above the longest.

A model's limit is, in order: ``MEDSEG_MODEL_TIME_LIMITS[name]``, the model's own
``ModelSpec.time_limit_seconds``, ``MEDSEG_JOB_TIME_LIMIT_SECONDS``, all read where the model
runs: the worker (``worker.runtime.deadline``). At the limit the job raises inside the model
(recorded, retried with backoff, quarantined after its attempts). Celery's own limits are the
backstops: its soft limit ``BACKSTOP_MARGIN_SECONDS`` after the longest model limit, its hard
limit (the worker process killed) ``HARD_LIMIT_MARGIN_SECONDS`` after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.core.registry import all_specs, get_spec
from worker.core.settings import Settings

HARD_LIMIT_MARGIN_SECONDS = 60
BACKSTOP_MARGIN_SECONDS = 30
VISIBILITY_MARGIN_SECONDS = 600


@dataclass(frozen=True)
class TimeLimit:
    """A job's limit and where it was set, for the error an operator reads."""

    seconds: int
    source: str


def resolve_time_limit(model_name: str, settings: Settings) -> TimeLimit:
    """The limit of a job of ``model_name`` and the setting it comes from."""
    if model_name in settings.model_time_limits:
        return TimeLimit(
            settings.model_time_limits[model_name], f"MEDSEG_MODEL_TIME_LIMITS[{model_name}]"
        )
    try:
        own = get_spec(model_name).time_limit_seconds
    except KeyError:
        own = None
    if own is not None:
        return TimeLimit(own, "the model's own default (not in MEDSEG_MODEL_TIME_LIMITS)")
    return TimeLimit(settings.job_time_limit_seconds, "MEDSEG_JOB_TIME_LIMIT_SECONDS")


def time_limit_seconds(model_name: str, settings: Settings) -> int:
    """Soft time limit of a job of ``model_name``."""
    return resolve_time_limit(model_name, settings).seconds


def longest_time_limit_seconds(settings: Settings) -> int:
    """The longest soft limit any job can have."""
    limits = [settings.job_time_limit_seconds, *settings.model_time_limits.values()]
    limits += [time_limit_seconds(spec.name, settings) for spec in all_specs()]
    return max(limits)


def visibility_timeout_seconds(settings: Settings) -> int:
    """Redis redelivers an unacknowledged job after this: well above the longest job."""
    return 2 * (longest_time_limit_seconds(settings) + HARD_LIMIT_MARGIN_SECONDS) + (
        VISIBILITY_MARGIN_SECONDS
    )
