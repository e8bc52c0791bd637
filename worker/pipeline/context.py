"""Per-process worker state: settings, DB engine, session factory, loaded models."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory
from worker.core.settings import Settings, get_settings
from worker.pipeline.cache import ModelCache
from worker.pipeline.device import resolve_device

logger = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    models: ModelCache

    @classmethod
    def create(cls, settings: Settings | None = None) -> WorkerContext:
        settings = settings or get_settings()
        engine = make_engine(settings.database_url)
        device = resolve_device(settings.device)
        models = ModelCache(device, settings.inference_precision)
        logger.info("worker process ready: inference in %s", models.precision_note())
        return cls(
            settings=settings,
            engine=engine,
            session_factory=make_session_factory(engine),
            models=models,
        )
