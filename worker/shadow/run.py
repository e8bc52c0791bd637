"""Run a model's shadow versions on the series a live job has just run on, and store what
they made as ``ShadowResult`` rows linked to the live result. Called by the worker after the
live result is recorded: the live result's deliveries do not wait for the shadows, and a
shadow that fails is recorded as failed without touching the live job.

Shadow outputs go to ``shadow-<version>/`` beside the live job's outputs; they have no
deliveries, so nothing ever sends them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Job, JobState, utcnow
from db.shadow_models import ShadowResult
from worker.core.errors import NothingFoundError
from worker.core.registry import get_spec
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series
from worker.runtime.jobs import describe_failure, instance_paths, job_dir
from worker.shadow.installs import shadow_specs

logger = logging.getLogger(__name__)

_FINISHED = (JobState.SUCCEEDED, JobState.NEEDS_REVIEW)


def _label(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", version)[:32]


def run_shadows(
    session_factory: sessionmaker[Session], models: ModelCache, results_root: Path, job_id: int
) -> list[int]:
    """Every shadow version of job ``job_id``'s model on its series; the new ShadowResult
    ids (none when the job has no live result or its model has no shadow)."""
    with session_factory() as session:
        job = session.get(
            Job, job_id, options=[selectinload(Job.results), selectinload(Job.series)]
        )
        if job is None or job.state not in _FINISHED or not job.results:
            return []
        try:
            spec = get_spec(job.model_name)
        except KeyError:
            return []
        result_id = job.results[-1].id
        paths = instance_paths(job)
        out_root = job_dir(results_root, job)
    made: list[int] = []
    for install, shadow in shadow_specs(session_factory, spec):
        out_dir = out_root / f"shadow-{_label(install.version)}"
        row = ShadowResult(
            result_id=result_id,
            install_id=install.id,
            model_name=shadow.name,
            model_version=shadow.version,
            created_at=utcnow(),
        )
        try:
            outcome = run_series(paths, models, out_dir, spec=shadow)
        except NothingFoundError as exc:
            row.status, row.error = "no_finding", describe_failure(exc)
        except Exception as exc:  # a shadow's failure is its own, never the live job's
            logger.warning(
                "job %s: shadow %s %s failed: %s", job_id, shadow.name, shadow.version, exc
            )
            row.status, row.error = "failed", describe_failure(exc)
        else:
            row.status = outcome.status
            row.review = "\n".join(outcome.review) or None
            row.weights_sha256 = outcome.weights_sha256
            row.inference_seconds = outcome.timings.get("infer", 0.0)
            row.measurements = json.dumps({m.key: [m.value, m.unit] for m in outcome.measurements})
            row.seg_path = next((str(o.path) for o in outcome.outputs if o.kind == "seg"), None)
        with session_factory.begin() as session:
            session.add(row)
            session.flush()
            made.append(row.id)
        logger.info("job %s: shadow %s %s %s", job_id, shadow.name, shadow.version, row.status)
    return made
