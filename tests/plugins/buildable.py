"""A model plugin with model-building commands (``MEDSEG_MODEL_PLUGINS`` naming this module):
``medseg train|evaluate|phantoms buildable`` reach these functions through the registry."""

from __future__ import annotations

import argparse
import json

from worker.core.commands import Evaluation, Progress
from worker.core.registry import ModelSpec


def train(args: argparse.Namespace, progress: Progress) -> str:
    progress("train", 1, 1)
    args.out.write_text(json.dumps({"device": args.device, "data": str(args.data)}))
    return f"saved {args.out}"


def evaluate(args: argparse.Namespace, progress: Progress) -> Evaluation:
    return Evaluation({"dice": 1.0, "data": str(args.data)}, "Dice 1.0000")


def phantoms(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.start, args.start + args.count):
        (args.out / f"phantom{seed}.txt").write_text(str(seed))


SPEC = ModelSpec(
    name="buildable-test",
    version="0",
    queue="cpu",
    description="test plugin: model-building commands only",
    accepts=lambda tags: False,
    load=lambda device: None,  # type: ignore[arg-type,return-value]
    train={"buildable": "tests.plugins.buildable:train"},
    evaluate={"buildable": "tests.plugins.buildable:evaluate"},
    phantoms={"buildable": "tests.plugins.buildable:phantoms"},
)
