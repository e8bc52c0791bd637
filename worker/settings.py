"""One typed settings object for every medseg role, read from ``MEDSEG_*`` env vars and ``.env``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DicomDestination(BaseModel):
    """A DICOM node results are C-STOREd to (``type: dicom``; other types may follow)."""

    type: Literal["dicom"] = "dicom"
    name: str = Field(min_length=1, max_length=64)
    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae: str = Field(default="MEDSEG", min_length=1, max_length=16)


class Settings(BaseSettings):
    """Settings shared by the gateway, the workers and the CLI.

    Every field can be set as ``MEDSEG_<FIELD>`` (for example ``MEDSEG_PORT=11112``).
    """

    model_config = SettingsConfigDict(
        env_prefix="MEDSEG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Field(
        default=Path("medseg-data"),
        description="Root of incoming/ (instances), results/ and the default SQLite DB.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means SQLite at DATA_DIR/medseg.db.",
    )
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker (Redis) URL."
    )
    broker_key_prefix: str = Field(
        default="",
        max_length=64,
        description="Prefix of every Redis key (queues included), so several medseg "
        "installations or test runs can share one Redis.",
    )

    ae_title: str = Field(default="MEDSEG", min_length=1, max_length=16)
    host: str = Field(default="0.0.0.0", description="Address the gateway listens on.")  # noqa: S104
    port: int = Field(default=11112, ge=1, le=65535)
    max_pdu: int = Field(default=0, ge=0, description="Maximum PDU we receive; 0 = unlimited.")
    allowed_calling_aes: list[str] = Field(
        default_factory=list,
        description='Calling AE titles allowed to associate, as JSON (["CT1", "US2"]); '
        "empty: any. Others are rejected (A-ASSOCIATE-RJ, calling AE not recognised) and logged.",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve Prometheus metrics on this port."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of the metrics port.")
    min_free_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=0,
        description="Refuse new instances (status A700) when the storage disk has less free space.",
    )

    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate: when set (with the key) the gateway speaks DICOM TLS.",
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle: when set, senders must present a certificate it signed.",
    )

    series_quiet_seconds: float = Field(
        default=10.0, gt=0, description="A series with no new instance for this long is complete."
    )
    completion_poll_seconds: float = Field(default=1.0, gt=0)

    job_max_attempts: int = Field(default=3, ge=1)
    job_time_limit_seconds: int = Field(default=1800, ge=10)
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete received instances this long after their series' results were "
        "made and delivered (records stay); unset: keep them.",
    )
    requeue_after_seconds: float = Field(
        default=6 * 3600,
        gt=0,
        description="A published job not started after this long is published again (lost "
        "broker message); set it above your longest queue wait.",
    )
    device: str = Field(default="auto", description="auto, cpu or cuda[:N].")
    destinations: list[DicomDestination] = Field(
        default_factory=list,
        description='Where results go, as JSON: [{"type": "dicom", "name": "pacs", '
        '"ae_title": "PACS", "host": "10.0.0.5", "port": 104}]',
    )
    delivery_max_attempts: int = Field(default=5, ge=1)
    return_to_sender_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Also send results back to the AE that sent the study: its calling AE "
        "title at the address it connected from, on this port.",
    )
    fetal_brain_weights: Path | None = Field(
        default=None, description="Checkpoint for the fetal brain model; default: shipped."
    )
    fetal_brain_match: str = Field(
        default=r"\b(FETAL|FETUS|FOETAL|FOETUS)\b",
        description="Regular expression (case-insensitive) on Series Description and Body Part "
        "Examined that routes an MR series to the fetal brain model.",
    )
    fetal_head_weights: Path | None = Field(
        default=None,
        description="Checkpoint (.pt with its .json) for the fetal head model; default: shipped.",
    )

    @field_validator("ae_title")
    @classmethod
    def _ae_title_is_valid(cls, value: str) -> str:
        if not value.strip() or "\\" in value or not value.isascii():
            raise ValueError("MEDSEG_AE_TITLE must be 1-16 ASCII characters without backslash")
        return value.strip()

    @field_validator("device")
    @classmethod
    def _device_is_valid(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError("MEDSEG_DEVICE must be auto, cpu or cuda[:N]")
        return value

    @model_validator(mode="after")
    def _tls_needs_both(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both MEDSEG_TLS_CERT_FILE and MEDSEG_TLS_KEY_FILE, or neither")
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "MEDSEG_TLS_CA_FILE needs MEDSEG_TLS_CERT_FILE and MEDSEG_TLS_KEY_FILE"
            )
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'medseg.db').resolve()}"
        return self

    @property
    def visibility_timeout_seconds(self) -> int:
        """Redis redelivers an unacknowledged job after this; above the longest job."""
        return 2 * self.job_time_limit_seconds + 600

    @property
    def incoming_dir(self) -> Path:
        return self.data_dir / "incoming"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, validated once at start."""
    return Settings()
