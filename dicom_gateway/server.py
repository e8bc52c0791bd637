"""Build and run the gateway: the AE with its handlers, and the completion monitor."""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import require_current, upgrade
from db.session import make_engine, make_session_factory
from dicom_gateway._fastpath.reactor import request_handler
from dicom_gateway.access import (
    GatewayServer,
    HostAllowlist,
    KnownSenders,
    parse_networks,
    remember_sender,
)
from dicom_gateway.contexts import supported_contexts
from dicom_gateway.handlers import StoreContext, handle_echo, handle_store, log_association
from dicom_gateway.indexer import IndexQueue, reconcile
from dicom_gateway.limits import ReceiveBudget, bounded_handler
from dicom_gateway.metrics import serve_metrics
from dicom_gateway.monitor import CompletionMonitor
from dicom_gateway.outbox import Publisher, celery_publisher
from dicom_gateway.receivers import (
    ReusePortServer,
    replace_dead,
    start_extra_receivers,
    stop_receivers,
    wait_for_free_port,
)
from dicom_gateway.records import UNAVAILABLE
from dicom_gateway.stopping import StopSignals
from worker.core.broker_held import held_task_ids, redis_reader
from worker.core.broker_probe import BrokerProbe
from worker.core.settings import Settings

logger = logging.getLogger(__name__)


#: How long a starting gateway waits for strays (a killed gateway's receivers) to leave its port.
STRAYS_TIMEOUT_SECONDS = 30.0


class PortInUseError(OSError):
    """Another process listens on the gateway's port."""


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Server-side TLS (PS3.15 B.1) when a certificate is configured; client certificates
    are required when a CA is configured."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_ca_file is not None:
        context.load_verify_locations(settings.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _queue_depth(settings: Settings) -> Callable[[str], int | None]:
    import redis

    client = redis.Redis.from_url(
        settings.broker_url, socket_timeout=0.5, socket_connect_timeout=0.5
    )

    def depth(queue: str) -> int | None:
        try:
            return int(client.llen(settings.broker_key_prefix + queue))
        except redis.RedisError:
            return None

    return depth


def _broker_probe(settings: Settings) -> BrokerProbe:
    """The workers alive and their queues, asked every 15 s in a thread, never at scrape."""
    import redis

    from worker.core.broker import create_control_app

    client = redis.Redis.from_url(
        settings.broker_url, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    probe = BrokerProbe(client, create_control_app(settings), settings.broker_key_prefix, 15.0)
    return probe.start()


def build_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.supported_contexts = supported_contexts()
    ae.maximum_pdu_size = settings.max_pdu
    # The server's admission (``access.GatewayServer``) keeps to MAX_ASSOCIATIONS, fairly;
    # pynetdicom's own count, which includes connections being dropped, is only a backstop.
    ae.maximum_associations = 2 * settings.max_associations
    ae.require_called_aet = settings.require_called_ae
    if settings.allowed_calling_aes:
        ae.require_calling_aet = list(settings.allowed_calling_aes)
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.network_timeout = 60
    return ae


def _start_server(ae: AE, settings: Settings, handlers: list[Any]) -> GatewayServer:
    """``AE.start_server(block=False)``, with our server class (the source-address allowlist)."""
    server = ae.make_server(
        (settings.host, settings.port),
        evt_handlers=handlers,
        ssl_context=tls_context(settings),
        # Several receiver processes share the port through SO_REUSEPORT.
        server_class=ReusePortServer if settings.receivers > 1 else GatewayServer,
        request_handler=bounded_handler(request_handler(settings.fast_receive) or RequestHandler),
    )
    assert isinstance(server, GatewayServer)
    networks = parse_networks(settings.allowed_calling_hosts)
    server.allowlist = HostAllowlist(networks)
    server.known = KnownSenders(networks)
    server.max_associations = settings.max_associations
    server.max_per_host = settings.max_associations_per_host
    server.max_pending_per_host = settings.max_pending_per_host
    server.reserved = settings.reserved_associations
    server.request_timeout = settings.association_request_timeout_seconds
    server.receive_budget = ReceiveBudget(settings.max_message_bytes, settings.max_receive_bytes)
    server.pdu_read_timeout = settings.pdu_read_timeout_seconds
    thread = threading.Thread(target=server.serve_forever, name="medseg-acceptor", daemon=True)
    thread.start()
    reaper = threading.Thread(
        target=server.reap_slow_requests, args=(server.stopped,), name="medseg-reaper", daemon=True
    )
    reaper.start()
    ae._servers.append(server)  # so AE.shutdown() stops it, as start_server() would
    return server


def _listen(
    settings: Settings, session_factory: sessionmaker[Session], index: IndexQueue | None
) -> GatewayServer:
    ctx = StoreContext(
        storage_root=settings.incoming_dir,
        session_factory=session_factory,
        min_free_bytes=settings.min_free_bytes,
        sync_storage=settings.sync_storage,
        index=index,
    )
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store, [ctx]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_ACCEPTED, log_association),
        (evt.EVT_ACCEPTED, remember_sender),
        (evt.EVT_REJECTED, log_association),
    ]
    return _start_server(build_ae(settings), settings, handlers)


def _held_task_ids(settings: Settings) -> Callable[[], set[str]] | None:
    """What the broker holds, asked of Redis; None for another broker."""
    client = redis_reader(settings.broker_url)
    if client is None:
        return None
    return partial(held_task_ids, client, settings.broker_key_prefix)


def start_receiver(settings: Settings) -> tuple[GatewayServer, IndexQueue | None]:
    """An extra receiver (``MEDSEG_RECEIVERS`` > 1): the C-STORE path only, no monitor."""
    session_factory = make_session_factory(make_engine(settings.database_url))
    index = IndexQueue(session_factory, settings.incoming_dir) if settings.batch_index else None
    return _listen(settings, session_factory, index), index


def recovery_when_back(session_factory: sessionmaker[Session], settings: Settings) -> None:
    """What a gateway started during a database outage does first when the database
    answers: check its schema (as at start), then record the stored files that have no
    row. Raises while the database is away (tried again at the next poll)."""
    require_current(settings.database_url, strict=True)
    reconcile(session_factory, settings.incoming_dir)


def start_gateway(
    settings: Settings, publish: Publisher | None = None
) -> tuple[ThreadedAssociationServer, CompletionMonitor]:
    """Start listening and the completion monitor; returns both, running in threads."""
    settings.incoming_dir.mkdir(parents=True, exist_ok=True)
    url = settings.database_url
    if settings.auto_migrate == "always" or (
        settings.auto_migrate == "sqlite" and url.startswith("sqlite")
    ):
        try:
            upgrade(url)
        except OperationalError as exc:  # down: start anyway, as require_current does
            logger.warning("database unreachable at start, not migrated: %s", exc.orig)
    require_current(url)  # not a "no such table" traceback later
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    held: Callable[[], set[str]] | None = None  # with a publisher given, no broker to ask
    if publish is None:
        from worker.core.broker import create_celery

        # No time limits in the messages: the worker applies its own (worker.runtime.deadline).
        publish = celery_publisher(create_celery(settings))
        held = _held_task_ids(settings)
    if not wait_for_free_port(settings.host, settings.port, STRAYS_TIMEOUT_SECONDS):
        raise PortInUseError(
            f"port {settings.port} is in use by another process (a gateway or its receivers "
            f"still running?); stop it, or set MEDSEG_PORT"
        )
    index = None
    recover: Callable[[], object] | None = None
    if settings.batch_index:
        # Files acknowledged before a crash but not yet recorded get their rows first; with
        # the database away, the monitor does it when it is back (files are the truth).
        recover = partial(recovery_when_back, session_factory, settings)
        try:
            reconcile(session_factory, settings.incoming_dir)
            recover = None
        except UNAVAILABLE as exc:
            logger.warning(
                "database unreachable at start: receiving anyway; stored instances are "
                "recorded when it is back (%s)",
                exc.orig,
            )
        index = IndexQueue(session_factory, settings.incoming_dir)
    server = _listen(settings, session_factory, index)
    if settings.metrics_port:
        serve_metrics(
            settings.metrics_port,
            settings.metrics_host,
            session_factory,
            _queue_depth(settings),
            _broker_probe(settings).latest,
        )
    monitor = CompletionMonitor(
        session_factory, publish, settings, index=index, held_task_ids=held, recover=recover
    )
    monitor.start()
    logger.info(
        "gateway %s listening on %s:%d, storing to %s",
        settings.ae_title,
        settings.host,
        settings.port,
        settings.incoming_dir,
    )
    return server, monitor


#: How often the main gateway looks for extra receivers that died.
SUPERVISE_SECONDS = 1.0


def _recover_lost_rows(settings: Settings) -> Callable[[], bool]:
    """What to do when a receiver dies: with the batch index, record the files it stored
    whose rows died with it; returns False (and is tried again) while the DB is away."""
    factories: list[sessionmaker[Session]] = []  # made at the first loss, not at start

    def recover() -> bool:
        if not settings.batch_index:
            return True  # every acknowledged instance already has its row
        if not factories:
            factories.append(make_session_factory(make_engine(settings.database_url)))
        try:
            reconcile(factories[0], settings.incoming_dir)
        except OperationalError as exc:
            logger.error("cannot record a dead receiver's instances yet: %s", exc.orig)
            return False
        return True

    return recover


def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then stop accepting, finish the monitor and return."""
    stops = StopSignals([signal.SIGTERM, signal.SIGINT])  # waited for without a lock
    server, monitor = start_gateway(settings)
    receivers = start_extra_receivers(settings) if settings.receivers > 1 else []
    recover = _recover_lost_rows(settings)
    unrecovered = False

    def on_loss() -> None:
        nonlocal unrecovered
        unrecovered = not recover()

    try:
        while not stops.wait(SUPERVISE_SECONDS):
            replace_dead(receivers, settings, on_loss)
            if unrecovered:
                on_loss()
        logger.info("signal %d: shutting down", stops.received)
    finally:
        server.shutdown()
        stop_receivers(receivers)
        monitor.stop()
