"""The worker's Celery application, built from the settings by ``worker.core.broker``."""

from __future__ import annotations

from worker.core.broker import create_celery
from worker.core.settings import get_settings

__all__ = ["app"]

app = create_celery(get_settings())
