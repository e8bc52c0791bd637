"""medseg worker: Celery app, routing, models, pipeline, batch mode and the CLI."""

__version__ = "0.1.0"
