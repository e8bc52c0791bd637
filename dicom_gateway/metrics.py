"""Prometheus metrics of the gateway (``MEDSEG_METRICS_PORT``): what it received, how it
answered, and, read at scrape time, jobs by state and queue depths; the workers alive and
consuming each queue as the broker probe last saw them (worker.core.broker_probe)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, Job, JobState, Result
from worker.core.broker import QUEUES
from worker.core.broker_probe import BrokerView

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
INSTANCES = Counter(
    "medseg_instances_received",
    "C-STORE requests answered, by status",
    ["status"],
    registry=REGISTRY,
)
BYTES = Counter("medseg_bytes_received", "Bytes of instances stored", registry=REGISTRY)
ASSOCIATIONS = Counter(
    "medseg_associations", "Association requests, by outcome", ["outcome"], registry=REGISTRY
)
STORE_SECONDS = Histogram(
    "medseg_store_seconds",
    "Time to validate, write and record one instance",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
RECEIVERS_REPLACED = Counter(
    "medseg_receivers_replaced",
    "Extra receiver processes (MEDSEG_RECEIVERS) that died and were started again",
    registry=REGISTRY,
)
COMPLETION_DELAY = Histogram(
    "medseg_series_completion_delay_seconds",
    "Last instance received -> series complete",
    registry=REGISTRY,
    buckets=(1, 2, 5, 10, 15, 20, 30, 60, 120, 300),
)


class _StateCollector:
    """Jobs by state and queue depth, read when Prometheus scrapes."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        queue_depth: Callable[[str], int | None],
        broker_view: Callable[[], BrokerView | None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._queue_depth = queue_depth
        self._broker_view = broker_view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("medseg_jobs", "Jobs by state", labels=["state"])
        deliveries = GaugeMetricFamily(
            "medseg_deliveries",
            "Deliveries by state (failed: attempts used up, until sent again)",
            labels=["state"],
        )
        backlog = GaugeMetricFamily(
            "medseg_review_backlog",
            "Flagged (needs_review) results no reviewer has decided: the review worklist "
            "(medseg_jobs{state=needs_review} counts decided ones too)",
        )
        up = 1.0
        try:
            with self._session_factory() as session:
                for family, column in ((jobs, Job.state), (deliveries, Delivery.state)):
                    for state, count in session.execute(
                        select(column, func.count()).group_by(column)
                    ):
                        family.add_metric([state.value], float(count))
                backlog.add_metric([], float(_undecided(session)))
        except Exception as exc:  # a scrape must not fail because the DB is down
            logger.warning("metrics: database unavailable: %s", type(exc).__name__)
            up = 0.0
        yield jobs
        yield deliveries
        if up:
            yield backlog
        yield GaugeMetricFamily(
            "medseg_database_up", "1 when the gateway could read the database at scrape", up
        )
        depth = GaugeMetricFamily(
            "medseg_queue_depth", "Messages waiting per queue", labels=["queue"]
        )
        for queue in ("gpu", "cpu"):
            value = self._queue_depth(queue)
            if value is not None:
                depth.add_metric([queue], float(value))
        yield depth
        yield from self._workers()

    def _workers(self) -> Iterator[GaugeMetricFamily]:
        """Absent while the workers could not be asked (broker down, not yet looked)."""
        view = self._broker_view() if self._broker_view is not None else None
        if view is None or view.workers is None or view.consumers is None:
            return
        yield GaugeMetricFamily(
            "medseg_workers_alive",
            "Celery workers that answered the broker probe's last broadcast",
            float(len(view.workers)),
        )
        consumers = GaugeMetricFamily(
            "medseg_queue_consumers", "Workers consuming each queue", labels=["queue"]
        )
        for queue in QUEUES:
            consumers.add_metric([queue], float(len(view.consumers.get(queue, []))))
        yield consumers


_collector: _StateCollector | None = None


def serve_metrics(
    port: int,
    host: str,
    session_factory: sessionmaker[Session],
    queue_depth: Callable[[str], int | None],
    broker_view: Callable[[], BrokerView | None] | None = None,
) -> Any:
    global _collector  # noqa: PLW0603 - one state collector per process, replaced on restart
    if _collector is not None:
        REGISTRY.unregister(_collector)
    _collector = _StateCollector(session_factory, queue_depth, broker_view)
    REGISTRY.register(_collector)
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    logger.info("metrics on http://%s:%d/metrics", host, port)
    return server


def _undecided(session: Session) -> int:
    """needs_review jobs whose result no reviewer has decided (the overview's count)."""
    query = (
        select(func.count(func.distinct(Job.id)))
        .join(Result, Result.job_id == Job.id)
        .where(Job.state == JobState.NEEDS_REVIEW, Result.review_decision.is_(None))
    )
    return int(session.scalar(query) or 0)
