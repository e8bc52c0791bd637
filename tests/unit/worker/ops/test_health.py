"""What stops work, for the dashboard's banner and `medseg status` (issue 21 item 3)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory
from worker.ops.health import broker_error, database_error, problems
from worker.ops.operations import Status


class _Down:
    def ping(self) -> bool:
        raise ConnectionError("down")


def test_a_queue_with_work_and_no_consumer_is_a_problem() -> None:
    status = Status(
        queue_depth={"gpu": 3, "cpu": 0}, workers=["medseg@a"], consumers={"cpu": ["medseg@a"]}
    )
    assert problems(status, None) == [
        "3 message(s) waiting in queue gpu and no worker consumes it: "
        "start a worker with --queues gpu"
    ]
    status.consumers = {"cpu": ["medseg@a"], "gpu": ["medseg@b"]}
    assert problems(status, None) == []
    status.consumers = None  # the workers could not be asked: nothing claimed
    assert problems(status, None) == []
    down = Status(queue_depth={"gpu": None, "cpu": None}, workers=None)
    assert problems(down, None) == [
        "broker unreachable: jobs wait in the outbox, workers get nothing"
    ]
    assert problems(None, "OperationalError")[0].startswith(
        "database unreachable (OperationalError)"
    )


def test_database_and_broker_checks(session_factory: sessionmaker[Session]) -> None:
    import fakeredis

    assert database_error(session_factory) is None
    engine = make_engine("postgresql+psycopg://medseg@127.0.0.1:1/medseg")
    try:
        assert database_error(make_session_factory(engine)) == "OperationalError"
    finally:
        engine.dispose()
    assert broker_error(fakeredis.FakeRedis()) is None
    assert broker_error(_Down()) == "ConnectionError"
    assert broker_error(None) == "no broker client"
