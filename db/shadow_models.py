"""Model versions installed by an operator (shadow or live) and the results of shadow runs.

A shadow version runs on the same series as the live one; its result is a ``ShadowResult``,
linked to the live ``Result`` it shadows. It has no deliveries and is never a ``Result``:
nothing sends it or shows it as the live answer. ``medseg promote`` makes an installed
version live (``ModelInstall.role``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.models import Base, Result, utcnow

#: ``ModelInstall.role``: runs beside the live version, never delivered.
SHADOW = "shadow"
#: Runs as the model's live version (after ``medseg promote``).
LIVE = "live"
#: Was live or shadow, replaced or removed; kept for the record.
RETIRED = "retired"


class ModelInstall(Base):
    """A version of a model with its own weights, installed by an operator."""

    __tablename__ = "model_install"
    __table_args__ = (UniqueConstraint("model_name", "version", name="uq_model_install_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32))
    weights_path: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16), index=True)
    installed_by: Mapped[str] = mapped_column(String(128))
    installed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text)


class ShadowResult(Base):
    """What a shadow version made of the series a live result came from."""

    __tablename__ = "shadow_result"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The live result it shadows (same job, same series).
    result_id: Mapped[int] = mapped_column(ForeignKey("result.id", ondelete="CASCADE"), index=True)
    install_id: Mapped[int] = mapped_column(
        ForeignKey("model_install.id", ondelete="CASCADE"), index=True
    )
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(32))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    #: ``succeeded``, ``needs_review`` (the gate flagged it), ``no_finding`` or ``failed``.
    status: Mapped[str] = mapped_column(String(16))
    #: The gate's reasons, one a line; None: not flagged.
    review: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    inference_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    #: ``{key: [value, unit]}`` as JSON.
    measurements: Mapped[str] = mapped_column(Text, default="{}")
    #: The shadow's SEG (beside the live outputs, never sent anywhere).
    seg_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    result: Mapped[Result] = relationship()
    install: Mapped[ModelInstall] = relationship()
