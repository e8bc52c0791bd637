"""Per-process worker state: settings, DB engine, session factory, loaded models."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory
from worker.core.settings import Settings, get_settings
from worker.pipeline.batching import Batching
from worker.pipeline.cache import ModelCache
from worker.pipeline.device import resolve_device

logger = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    models: ModelCache
    #: Jobs of a single-frame model run together (worker.runtime.batch_jobs).
    batching: Batching = field(default_factory=Batching)

    @classmethod
    def create(cls, settings: Settings | None = None) -> WorkerContext:
        settings = settings or get_settings()
        engine = make_engine(settings.database_url)
        device = resolve_device(settings.device)
        models = ModelCache(device, settings.inference_precision, settle=True)
        batching = Batching.for_device(settings, device)
        logger.info(
            "worker process ready: inference in %s; batching across series %s",
            models.precision_note(),
            batching.note(),
        )
        return cls(
            settings=settings,
            engine=engine,
            session_factory=make_session_factory(engine),
            models=models,
            batching=batching,
        )
