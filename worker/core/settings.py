"""One typed settings object for every medseg role, read from ``MEDSEG_*`` env vars and ``.env``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Inference precision (``MEDSEG_INFERENCE_PRECISION``); see ``worker.pipeline.precision``.
Precision = Literal["fp32", "bf16", "fp16"]


class DeliveryPolicy(BaseModel):
    """Which results a destination gets. Results are always kept locally; one a destination
    does not get is recorded as a ``withheld`` delivery with the reason (docs/configuration.md).
    """

    send_needs_review: bool = Field(
        default=False,
        description="Also send results the quality gate flagged before a reviewer accepts them.",
    )
    send_not_validated: bool = Field(
        default=False,
        description="Also send results of validated-synthetic, phantom-only or unvalidated models "
        "(not for clinical "
        "use), even after a reviewer accepted them.",
    )


class DicomDestination(DeliveryPolicy):
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
    require_called_ae: bool = Field(
        default=True,
        description="Reject associations whose called AE title is not MEDSEG_AE_TITLE "
        "(A-ASSOCIATE-RJ, called AE not recognised), as Orthanc and dcm4chee do; false "
        "accepts any called AE (for senders configured with another title).",
    )
    max_associations: int = Field(
        default=32, ge=1, description="Associations the gateway serves at once (all sources)."
    )
    max_associations_per_host: int = Field(
        default=16,
        ge=1,
        description="Associations one source address may hold at once; more get "
        "A-ASSOCIATE-RJ (local limit exceeded), so one source cannot lock the others out.",
    )
    max_pending_per_host: int = Field(
        default=4,
        ge=1,
        description="Connections one source address may hold whose A-ASSOCIATE-RQ is not "
        "complete yet; more are refused at once (half-sent requests cannot fill the limit).",
    )
    reserved_associations: int = Field(
        default=8,
        ge=0,
        description="Associations only known senders may use (an address in "
        "ALLOWED_CALLING_HOSTS, or one that completed an association): senders never seen "
        "together hold at most MAX_ASSOCIATIONS minus this.",
    )
    association_request_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A connection whose A-ASSOCIATE-RQ is not complete this long after it "
        "was accepted (sent slowly, in part, or not at all) is dropped.",
    )
    pdu_read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A peer that stops sending in the middle of a PDU (or does not read our "
        "response) for this long is disconnected.",
    )
    max_message_bytes: int = Field(
        default=1 << 30,
        ge=1 << 20,
        description="Bytes one association may have received towards a message not yet "
        "handled (a PDU announcing more, or a data set growing past it, aborts the association).",
    )
    max_receive_bytes: int = Field(
        default=2 << 30,
        ge=1 << 20,
        description="The same bound over all associations of a gateway process together.",
    )
    allowed_calling_aes: list[str] = Field(
        default_factory=list,
        description='Calling AE titles allowed to associate, as JSON (["CT1", "US2"]); '
        "empty: any. Others are rejected (A-ASSOCIATE-RJ, calling AE not recognised) and logged.",
    )
    allowed_calling_hosts: list[str] = Field(
        default_factory=list,
        description='Source addresses allowed to associate, as JSON (["10.1.2.3", '
        '"192.168.10.0/24"]); empty: any. Others get A-ASSOCIATE-RJ and a WARNING log line.',
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
    receivers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Gateway processes receiving on the port (SO_REUSEPORT), for parallel "
        "senders; the first also runs completion, outbox and metrics.",
    )
    auto_migrate: Literal["sqlite", "always", "never"] = Field(
        default="sqlite",
        description="Whether the gateway brings the database schema up to date at start: "
        "'sqlite' for the embedded SQLite database only (a server database is migrated by "
        "`medseg db upgrade`, on purpose), 'always', or 'never'. A database that is not "
        "current is then refused with what to run.",
    )
    batch_index: bool = Field(
        default=True,
        description="Record received instances in the DB in batches (each completion poll) "
        "instead of one transaction per C-STORE. Success is still answered only once the file "
        "and its directory are fsynced; on start (and when an extra receiver dies) the gateway "
        "records stored files that have no row (crash recovery), which reads every file name "
        "under incoming/. False: one DB transaction per C-STORE, answered after its commit.",
    )

    sync_storage: bool = Field(
        default=True,
        description="fsync each received instance before answering success. Turn off only "
        "where the storage survives power loss by itself (battery-backed cache): then a crash "
        "can lose instances the sender was told were stored.",
    )
    fast_receive: bool = Field(
        default=True,
        description="Accepted associations wait for socket data instead of pynetdicom's 1 ms "
        "polling loops, and C-STORE requests are answered by the lean path in "
        "dicom_gateway/_fastpath/; false restores pynetdicom's loops and DIMSE handling.",
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
    series_quiet_seconds_by_ae: dict[str, float] = Field(
        default_factory=dict,
        description='Quiet period per calling AE title, as JSON ({"US_ROOM3": 2, "CT1": 20}).',
    )
    series_quiet_seconds_by_model: dict[str, float] = Field(
        default_factory=dict,
        description="Quiet period per model the series routes to, as JSON "
        '({"fetal-head-unet": 3}); a calling-AE entry wins over a model entry.',
    )
    completion_poll_seconds: float = Field(default=1.0, gt=0)

    job_max_attempts: int = Field(default=3, ge=1)
    job_time_limit_seconds: int = Field(default=1800, ge=10)
    model_plugins: list[str] = Field(
        default_factory=list,
        description='Extra model modules to register, as JSON (["mysite.models.spleen"]): '
        "each importable module with a SPEC = ModelSpec(...) is a model, as in worker/models.",
    )
    research_models: list[str] = Field(
        default_factory=list,
        description="Models to run although no real patient data validated them, as JSON "
        '(["fetal-brain-unet"]). A model whose card says phantom-only or validated-synthetic '
        "is off by default: the series it would take are not processed, and say why. Named "
        "here, it runs, and its results stay NOT FOR CLINICAL USE (withheld from destinations "
        "without send_not_validated).",
    )
    model_time_limits: dict[str, int] = Field(
        default_factory=dict,
        description='Per-model time limits in seconds, as JSON ({"fetal-head-unet": 120}); '
        "a model not named here uses its own default, else JOB_TIME_LIMIT_SECONDS. Read by "
        "the worker, where the model runs.",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete received instances this long after their series' results were "
        "made and delivered (records stay); unset: keep them.",
    )
    sweep_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the gateway looks for lost jobs (worker died, broker message lost).",
    )
    requeue_after_seconds: float = Field(
        default=6 * 3600,
        gt=0,
        description="A published job not started after this long is published again (lost "
        "broker message); set it above your longest queue wait.",
    )
    lost_message_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A job published this long ago whose message the Redis broker no longer "
        "holds (Redis restarted empty) is published again, checked every "
        "SWEEP_INTERVAL_SECONDS.",
    )
    device: str = Field(default="auto", description="auto, cpu or cuda[:N].")
    inference_precision: Precision = Field(
        default="fp32",
        description="fp32, bf16 or fp16: the U-Nets' and detector's forward passes under "
        "autocast, bf16 ~1.8x faster on CPUs with bf16 units (Intel AMX, AVX512-BF16) and on "
        "GPUs from compute capability 8.0, fp16 on CUDA only; masks within a few boundary "
        "pixels of fp32 (docs/performance.md). Where the device has no native units for it, "
        "fp32 is used and a warning says so at start.",
    )
    batch_max: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Jobs of a single-frame model (fetal head US, chest film) a worker process "
        "runs together, their frames in one forward pass (worker.runtime.batch_jobs); unset: "
        "16 on CUDA, 1 (off) on CPU, where one frame per pass is fastest. Each job is still "
        "post-processed, written and recorded on its own.",
    )
    batch_wait_ms: float = Field(
        default=10.0,
        ge=0,
        le=10000,
        description="How long a worker process that claimed a job of a single-frame model waits "
        "for more queued jobs of that model to fill its batch (only while it is not full; "
        "with BATCH_MAX 1 nothing waits).",
    )
    destinations: list[DicomDestination] = Field(
        default_factory=list,
        description='Where results go, as JSON: [{"type": "dicom", "name": "pacs", '
        '"ae_title": "PACS", "host": "10.0.0.5", "port": 104}]; each may add '
        '"send_needs_review" and "send_not_validated" (both false by default: flagged and '
        "not-for-clinical-use results are withheld from it).",
    )
    delivery_max_attempts: int = Field(default=5, ge=1)
    return_to_sender_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Also send results back to the AE that sent the study: its calling AE "
        "title at the address it connected from, on this port.",
    )
    training_export_secret: str = Field(
        default="",
        description="Site secret for `medseg export-training`: subject keys are HMAC-SHA256 of "
        "the Patient ID under it (16 characters or more; keep it, or keys change).",
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
    lung_ct_model: Literal["unet", "threshold"] = Field(
        default="unet",
        description="Model that chest CT routes to: the lung U-Net, or the HU-threshold reference "
        "(also the fallback when the U-Net checkpoint file is missing).",
    )
    lung_ct_weights: Path | None = Field(
        default=None,
        description="Checkpoint (.pt with its .json) for the lung CT U-Net; default: shipped.",
    )
    lung_cxr_weights: Path | None = Field(
        default=None,
        description="Checkpoint (.pt with its .json) for the chest X-ray lung-field U-Net; "
        "default: shipped.",
    )
    pneumonia_detector: bool = Field(
        default=False,
        description="Run the chest X-ray pneumonia opacity detector (research only: it is "
        "validated on phantoms, not on real films). When on, every chest X-ray result is not "
        "for clinical use: withheld from destinations without send_not_validated and marked "
        "NOT FOR CLINICAL USE in its SEG, SR, overlay and tables.",
    )
    pneumonia_weights: Path | None = Field(
        default=None,
        description="Checkpoint (.pt with its .json) for the chest X-ray pneumonia opacity "
        "detector (Faster R-CNN); default: shipped.",
    )
    pneumonia_score_threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Detector confidence at or above which an opacity is reported as a finding.",
    )

    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="medseg worker serves Prometheus metrics of all its processes on this port "
        "(multiprocess mode, files in PROMETHEUS_MULTIPROC_DIR or a fresh temporary folder).",
    )
    dashboard_host: str = Field(default="127.0.0.1", description="Address of the web dashboard.")
    dashboard_port: int = Field(default=8080, ge=1, le=65535, description="Dashboard port.")
    dashboard_user: str = Field(
        default="admin", min_length=1, max_length=64, description="The dashboard's admin user."
    )
    dashboard_password_hash: str = Field(
        default="",
        description="scrypt hash of the admin password (medseg dashboard hash-password); the "
        "dashboard refuses to start without it.",
    )
    dashboard_secret_key: str = Field(
        default="",
        description="Key signing the dashboard's session cookies; empty: a random key per start "
        "(everyone logs in again after a restart).",
    )
    dashboard_live_seconds: float = Field(
        default=5.0,
        ge=1.0,
        le=300.0,
        description="How often a live dashboard page fetches itself again, in seconds.",
    )
    dashboard_secure_cookie: bool = Field(
        default=False,
        description="Send the session cookie over HTTPS only (set it behind a TLS proxy).",
    )
    oidc_issuer: str = Field(
        default="",
        description="Single sign-on: the OpenID Connect provider's issuer URL (its "
        "/.well-known/openid-configuration is read); empty: no single sign-on.",
    )
    oidc_client_id: str = Field(default="", description="Single sign-on: this client's id.")
    oidc_client_secret: str = Field(
        default="", description="Single sign-on: this client's secret at the provider."
    )
    oidc_scopes: str = Field(
        default="openid profile email",
        description="Single sign-on: the scopes asked for (the role claim must be in one).",
    )
    oidc_redirect_url: str = Field(
        default="",
        description="Single sign-on: the dashboard's callback URL as the provider knows it "
        "(https://HOST/auth/callback); empty: derived from the request (no proxy).",
    )
    oidc_username_claim: str = Field(
        default="preferred_username",
        description="Single sign-on: the ID token / userinfo claim naming the person.",
    )
    oidc_role_claim: str = Field(
        default="groups",
        description="Single sign-on: the claim (a string or a list of strings) mapped to roles.",
    )
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict,
        description='Single sign-on: role claim value -> role, JSON ({"pacs-admins": "admin", '
        '"radiologists": "reviewer"}); the highest role matched wins; no match: refused.',
    )
    oidc_label: str = Field(
        default="single sign-on", description="Single sign-on: the login button's 'Sign in with'."
    )
    cli_require_account: bool = Field(
        default=False,
        description="The CLI's acting user (--user, MEDSEG_OPERATOR, the OS user) must be an "
        "enabled account whose role allows the action; false: named accounts are checked, "
        "other names act as admin.",
    )
    viewer_url_template: str = Field(
        default="",
        description="URL of the site's DICOM viewer for one study, with {study_uid} and "
        "{series_uid} placeholders (OHIF, Orthanc Explorer 2, Stone); empty: no 'open in "
        "viewer' link on the study page.",
    )

    @field_validator("viewer_url_template")
    @classmethod
    def _viewer_template_is_valid(cls, value: str) -> str:
        from worker.core.viewer_link import check_template

        return check_template(value.strip())

    @field_validator("ae_title")
    @classmethod
    def _ae_title_is_valid(cls, value: str) -> str:
        if not value.strip() or "\\" in value or not value.isascii():
            raise ValueError("MEDSEG_AE_TITLE must be 1-16 ASCII characters without backslash")
        return value.strip()

    @field_validator("allowed_calling_hosts")
    @classmethod
    def _hosts_are_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"MEDSEG_ALLOWED_CALLING_HOSTS: {entry!r} is not an IP address or network"
                ) from exc
        return value

    @field_validator("oidc_role_map")
    @classmethod
    def _roles_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        roles = ("viewer", "operator", "reviewer", "admin")  # worker.ops.people.ROLES
        wrong = sorted(role for role in value.values() if role not in roles)
        if wrong:
            raise ValueError(
                f"MEDSEG_OIDC_ROLE_MAP maps to unknown role(s) {', '.join(wrong)}: use "
                f"{', '.join(roles)}"
            )
        return value

    @model_validator(mode="after")
    def _oidc_needs_client(self) -> Settings:
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_role_map):
            raise ValueError(
                "MEDSEG_OIDC_ISSUER is set: set MEDSEG_OIDC_CLIENT_ID (and _SECRET) and "
                "MEDSEG_OIDC_ROLE_MAP too"
            )
        return self

    @field_validator("model_time_limits")
    @classmethod
    def _limits_are_positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {name: seconds for name, seconds in value.items() if seconds < 1}
        if bad:
            raise ValueError(f"MEDSEG_MODEL_TIME_LIMITS: limits must be >= 1 s, got {bad}")
        return value

    @field_validator("device")
    @classmethod
    def _device_is_valid(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError("MEDSEG_DEVICE must be auto, cpu or cuda[:N]")
        return value

    @model_validator(mode="after")
    def _reserve_leaves_room(self) -> Settings:
        if self.reserved_associations >= self.max_associations:
            raise ValueError(
                "MEDSEG_RESERVED_ASSOCIATIONS must be below MEDSEG_MAX_ASSOCIATIONS "
                f"({self.reserved_associations} >= {self.max_associations})"
            )
        return self

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
    def incoming_dir(self) -> Path:
        return self.data_dir / "incoming"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, validated once at start."""
    return Settings()
