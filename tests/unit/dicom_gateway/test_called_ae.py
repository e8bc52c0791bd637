"""Issue 18 item 10, issue 30 item 8: the called AE title is checked, by default (storescu,
echoscu as senders); ``MEDSEG_REQUIRE_CALLED_AE=false`` accepts any."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway.server import start_gateway
from tests.support.gateway import RecordingPublisher
from tests.support.tools import need_tool
from worker.core.settings import Settings
from worker.devtools.localstack import free_port


def _gateway(settings: Settings, require: bool) -> Iterator[Settings]:
    settings = settings.model_copy(update={"port": free_port(), "require_called_ae": require})
    server, monitor = start_gateway(settings, publish=RecordingPublisher())
    yield settings
    server.shutdown()
    monitor.stop()


@pytest.fixture
def strict(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Settings]:
    yield from _gateway(settings, Settings().require_called_ae)  # the default


@pytest.fixture
def lenient(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Settings]:
    yield from _gateway(settings, False)


def _echo(settings: Settings, called: str) -> subprocess.CompletedProcess[str]:
    echoscu = need_tool("echoscu")
    return subprocess.run(
        [echoscu, "-aet", "SCU", "-aec", called, "127.0.0.1", str(settings.port)],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def test_a_wrong_called_ae_is_rejected_by_default(strict: Settings) -> None:
    """The audit: ``echoscu -aec WRONGAE`` was accepted."""
    assert Settings().require_called_ae is True
    refused = _echo(strict, "WRONGAE")
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.stderr + refused.stdout
    assert _echo(strict, strict.ae_title).returncode == 0


def test_any_called_ae_is_accepted_when_not_required(lenient: Settings) -> None:
    assert _echo(lenient, "ANYTHING").returncode == 0
