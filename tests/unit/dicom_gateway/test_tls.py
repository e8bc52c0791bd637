"""DICOM TLS with a CA made by the test: TLS senders with a signed certificate get in,
plain TCP and unsigned clients do not."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway import statuses
from dicom_gateway.server import start_gateway
from tests.support.gateway import RecordingPublisher
from tests.support.tools import need_tool
from worker.core.settings import Settings
from worker.devtools.localstack import free_port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tool("openssl")
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=medseg test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
            cwd=d,
        )
    return d


def _echo(port: int, context: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    tls = (context, "localhost") if context else None
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDSEG", tls_args=tls)
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().Status == statuses.SUCCESS
    assoc.release()
    return bool(ok)


def test_mutual_tls(pki: Path, settings: Settings, session_factory: sessionmaker[Session]) -> None:
    settings = settings.model_copy(
        update={
            "port": free_port(),
            "tls_cert_file": pki / "server.pem",
            "tls_key_file": pki / "server.key",
            "tls_ca_file": pki / "ca.pem",
        }
    )
    server, monitor = start_gateway(settings, publish=RecordingPublisher())
    try:
        signed = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
        signed.load_cert_chain(pki / "client.pem", pki / "client.key")
        assert _echo(settings.port, signed)
        anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
        assert not _echo(settings.port, anonymous)  # no client certificate
        assert not _echo(settings.port, None)  # plain TCP
    finally:
        server.shutdown()
        monitor.stop()


def test_tls_settings_must_come_in_pairs(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        Settings(data_dir=tmp_path, tls_cert_file=pki / "server.pem")
