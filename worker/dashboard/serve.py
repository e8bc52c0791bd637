"""Run the dashboard with uvicorn against the configured database and broker."""

from __future__ import annotations

import logging

from worker.core.settings import Settings

logger = logging.getLogger(__name__)


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    import redis
    import uvicorn

    from db.session import make_engine, make_session_factory
    from worker.dashboard.app import create_app
    from worker.runtime.celery_app import app as celery_app

    engine = make_engine(settings.database_url)
    app = create_app(
        settings,
        make_session_factory(engine),
        redis.Redis.from_url(settings.broker_url, socket_timeout=1),
        celery_app,
    )
    host = host or settings.dashboard_host
    port = port or settings.dashboard_port
    logger.info("dashboard on http://%s:%d/", host, port)
    try:
        # log_config=None: our logging configuration; access lines carry no PHI (IDs only).
        uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=False)
    finally:
        engine.dispose()
