"""Installed model versions (``model_install`` rows): install one in shadow, list them,
promote one to live. Installs live in the database, so every worker sees the same set and an
operator changes it with one audited command, without editing settings on each machine.

The live version of a model is its promoted install when there is one, else the version the
worker ships with (its ``ModelSpec``, weights from the settings).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import utcnow
from db.shadow_models import LIVE, RETIRED, SHADOW, ModelInstall
from worker.core.registry import Model, ModelSpec, get_spec
from worker.ops.audit import Actor, record, refusals
from worker.ops.operations import OperationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    id: int
    model: str
    version: str
    weights: Path
    weights_sha256: str
    role: str
    installed_by: str


def _view(row: ModelInstall) -> Installed:
    return Installed(
        row.id,
        row.model_name,
        row.version,
        Path(row.weights_path),
        row.weights_sha256,
        row.role,
        row.installed_by,
    )


def install_shadow(
    session_factory: sessionmaker[Session],
    model: str,
    version: str,
    weights: Path,
    *,
    actor: Actor,
    note: str | None = None,
) -> Installed:
    """Install ``weights`` as ``version`` of ``model`` in shadow (audited ``shadow``). The
    model must take other weights; the version label must be new for the model."""
    with refusals(session_factory, actor, "shadow"):
        try:
            spec = get_spec(model)
        except KeyError as exc:
            raise OperationError(exc.args[0]) from exc
        if spec.load_weights is None:
            raise OperationError(f"{model} cannot load other weights: no shadow version")
        weights = weights.resolve()
        if not weights.is_file() or not weights.with_suffix(".json").is_file():
            raise OperationError(f"{weights}: no such checkpoint (weights .pt with its .json)")
        if version == spec.version:
            raise OperationError(f"{model} ships as {version}: give the new version its own label")
        from worker.models._nn.checkpoint import sha256_of

        sha = sha256_of(weights)
        with session_factory.begin() as session:
            taken = session.scalar(
                select(ModelInstall).where(
                    ModelInstall.model_name == model, ModelInstall.version == version
                )
            )
            if taken is not None:
                raise OperationError(f"{model} {version} is already installed ({taken.role})")
            row = ModelInstall(
                model_name=model,
                version=version,
                weights_path=str(weights),
                weights_sha256=sha,
                role=SHADOW,
                installed_by=actor.user.strip()[:128],
                installed_at=utcnow(),
                note=note,
            )
            session.add(row)
            session.flush()
            record(
                session,
                actor,
                "shadow",
                detail=f"{model} {version} installed in shadow (weights sha256 {sha[:12]}…)",
            )
            return _view(row)


def installs(session_factory: sessionmaker[Session], model: str | None = None) -> list[Installed]:
    query = select(ModelInstall).order_by(ModelInstall.model_name, ModelInstall.id)
    if model is not None:
        query = query.where(ModelInstall.model_name == model)
    with session_factory() as session:
        return [_view(row) for row in session.scalars(query)]


def promote(
    session_factory: sessionmaker[Session], model: str, version: str, *, actor: Actor
) -> Installed:
    """Make installed ``version`` of ``model`` its live version (audited ``promote``): the
    version live before is retired; jobs that start from now run the new one."""
    with refusals(session_factory, actor, "promote"), session_factory.begin() as session:
        rows = list(
            session.scalars(
                select(ModelInstall).where(ModelInstall.model_name == model).with_for_update()
            )
        )
        chosen = next((r for r in rows if r.version == version), None)
        if chosen is None:
            raise OperationError(f"{model} {version} is not installed (medseg shadow install)")
        if chosen.role == LIVE:
            raise OperationError(f"{model} {version} is already live")
        before = next((r for r in rows if r.role == LIVE), None)
        if before is not None:
            before.role = RETIRED
        chosen.role, chosen.promoted_at = LIVE, utcnow()
        was = before.version if before else f"{get_spec(model).version} (shipped)"
        record(session, actor, "promote", detail=f"{model} {version} live (was {was})")
        return _view(chosen)


def _load_with(load: Callable[[str, Path], Model], weights: Path, device: str) -> Model:
    return load(device, weights)


def with_weights(spec: ModelSpec, install: Installed) -> ModelSpec:
    """``spec`` as installed version ``install``: its label, its weights."""
    if spec.load_weights is None:
        raise OperationError(f"{spec.name} cannot load other weights")
    return dataclasses.replace(
        spec,
        version=install.version,
        load=partial(_load_with, spec.load_weights, install.weights),
        weights_sha256=install.weights_sha256,
    )


def _by_role(session_factory: sessionmaker[Session], model: str, role: str) -> list[Installed]:
    with session_factory() as session:
        rows = session.scalars(
            select(ModelInstall)
            .where(ModelInstall.model_name == model, ModelInstall.role == role)
            .order_by(ModelInstall.id)
        )
        return [_view(row) for row in rows]


def live_spec(session_factory: sessionmaker[Session], spec: ModelSpec) -> ModelSpec:
    """The spec the live version of ``spec``'s model runs: its promoted install, if any."""
    promoted = _by_role(session_factory, spec.name, LIVE)
    return with_weights(spec, promoted[-1]) if promoted else spec


def shadow_specs(
    session_factory: sessionmaker[Session], spec: ModelSpec
) -> list[tuple[Installed, ModelSpec]]:
    """The versions of ``spec``'s model installed in shadow, with the specs they run."""
    if spec.load_weights is None:
        return []
    return [(i, with_weights(spec, i)) for i in _by_role(session_factory, spec.name, SHADOW)]
