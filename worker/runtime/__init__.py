"""The worker process: Celery app and tasks, the DB side of a job, recovery of a restarted node,
metrics, logging, prestart.
"""
