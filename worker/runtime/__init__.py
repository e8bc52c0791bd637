"""The worker process: Celery app and tasks, the DB side of a job (one alone, or a batch of
single-frame jobs), recovery of a restarted node, metrics, logging, prestart.
"""
