"""The model-building commands a model offers: ``medseg train|evaluate|phantoms|pack NAME``.

A ``ModelSpec`` names them as ``"package.module:function"`` strings (``train``, ``evaluate``,
``phantoms``, ``pack``: NAME -> target); this module finds a NAME among the registered models and
imports its function only then, so that serving never imports training or evaluation code.
The functions receive the parsed command line (the flags of ``worker.cli.models``) with
``args.device`` already resolved ("cpu", "cuda", ...).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from worker.core.registry import ModelSpec, all_specs

Kind = Literal["train", "evaluate", "phantoms", "pack"]
Progress = Callable[[str, int, int], None]  # (stage, done, total)


class TrainCommand(Protocol):
    """Trains and saves ``args.out`` (+ .json); returns the lines to print."""

    def __call__(self, args: argparse.Namespace, progress: Progress) -> str: ...


@dataclass(frozen=True)
class Evaluation:
    summary: dict[str, Any]  # written by ``--json``
    text: str  # printed


class EvaluateCommand(Protocol):
    def __call__(self, args: argparse.Namespace, progress: Progress) -> Evaluation: ...


class PhantomsCommand(Protocol):
    """Writes ``args.count`` phantoms from seed ``args.start`` to ``args.out``."""

    def __call__(self, args: argparse.Namespace) -> None: ...


class PackCommand(Protocol):
    """Writes the training set ``args.data`` as one file, ``args.out``; returns what to print."""

    def __call__(self, args: argparse.Namespace) -> str: ...


def commands(kind: Kind, specs: tuple[ModelSpec, ...] | None = None) -> dict[str, str]:
    """NAME -> target of every registered model's ``kind`` commands."""
    found: dict[str, str] = {}
    for spec in all_specs() if specs is None else specs:
        for name, target in getattr(spec, kind).items():
            if name in found:
                raise RuntimeError(f"two models offer `medseg {kind} {name}`")
            found[name] = target
    return found


def load(target: str) -> Callable[..., Any]:
    """The function ``"package.module:function"`` names."""
    module, _, function = target.partition(":")
    loaded = getattr(importlib.import_module(module), function)
    if not callable(loaded):
        raise TypeError(f"{target} is not callable")
    return cast(Callable[..., Any], loaded)


def train_command(target: str) -> TrainCommand:
    return cast(TrainCommand, load(target))


def evaluate_command(target: str) -> EvaluateCommand:
    return cast(EvaluateCommand, load(target))


def phantoms_command(target: str) -> PhantomsCommand:
    return cast(PhantomsCommand, load(target))


def pack_command(target: str) -> PackCommand:
    return cast(PackCommand, load(target))
