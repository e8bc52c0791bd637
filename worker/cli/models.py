"""``medseg train|evaluate|phantoms|pack NAME``: the model-building commands of the CLI.

NAME is looked up among the registered models' commands (``ModelSpec.train``, ``evaluate``,
``phantoms``, ``pack``; see ``worker.core.commands``), so a model folder or a plugin adds its
own. The flags of ``train`` are worker.models._nn.train_args', which a model's training module
also reads when it runs alone (``python -m worker.models.fetal_head.train``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from worker.core.commands import (
    Kind,
    commands,
    evaluate_command,
    pack_command,
    phantoms_command,
    train_command,
)
from worker.core.errors import DataLayoutError
from worker.models._nn.train_args import add_train_arguments


def _target(args: argparse.Namespace, kind: Kind, name: str) -> str:
    """The registered target of ``medseg KIND NAME``; an unknown NAME is a usage error."""
    known = commands(kind)
    if name not in known:
        choices = ", ".join(repr(n) for n in sorted(known))
        args.parser.error(f"invalid choice: {name!r} (choose from {choices})")
    return known[name]


def _resolve_device(args: argparse.Namespace) -> None:
    from worker.pipeline.device import resolve_device

    args.device = resolve_device(args.device)


def _dicom_hint(exc: DataLayoutError, data: Path) -> DataLayoutError:
    """The error again, saying so when ``data`` holds DICOM files (as ``medseg phantoms``
    writes): those are inputs to process or send, not a training set."""
    if data.is_dir() and next(data.rglob("*.dcm"), None) is not None:
        return DataLayoutError(
            f"{exc}; {data} holds DICOM files (as `medseg phantoms` writes): those are for "
            "`medseg process` or a C-STORE, not for training"
        )
    return exc


def _cmd_train(args: argparse.Namespace) -> int:
    command = train_command(_target(args, "train", args.task))
    _resolve_device(args)
    try:
        summary = command(args, _progress)
    except DataLayoutError as exc:
        raise _dicom_hint(exc, args.data) from exc
    print("\n" + summary)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    command = evaluate_command(_target(args, "evaluate", args.task))
    _resolve_device(args)
    try:
        evaluation = command(args, _progress)
    except DataLayoutError as exc:
        raise _dicom_hint(exc, args.data) from exc
    print("\n" + evaluation.text)
    if args.json:
        args.json.write_text(json.dumps(evaluation.summary, indent=2) + "\n")
    return 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    phantoms_command(_target(args, "phantoms", args.kind))(args)
    print(f"wrote {args.count} {args.kind} phantom(s) to {args.out}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    command = pack_command(_target(args, "pack", args.task))
    try:
        summary = command(args)
    except DataLayoutError as exc:
        raise _dicom_hint(exc, args.data) from exc
    print(summary)
    return 0


def _progress(stage: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    end = "\n" if done >= total else ""
    print(
        f"\r{stage:<9} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
        end=end,
        file=sys.stderr,
    )


_NAMES = "a name a registered model offers (an unknown one lists them)"


def add_model_commands(sub: Any) -> None:
    train = sub.add_parser("train", help="train a model on a data folder")
    train.add_argument("task", metavar="NAME", help=_NAMES)
    add_train_arguments(train)
    train.set_defaults(func=_cmd_train, parser=train)

    evaluate = sub.add_parser("evaluate", help="evaluate a model on a held-out data folder")
    evaluate.add_argument("task", metavar="NAME", help=_NAMES)
    evaluate.add_argument(
        "--data", type=Path, required=True, help="held-out folder, same layout as for train"
    )
    evaluate.add_argument("--weights", type=Path, help="checkpoint (default: the shipped one)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", type=Path, help="also write the summary as JSON")
    evaluate.add_argument(
        "--record",
        action="store_true",
        help="lung-ct, fetal-head: also store it in the checkpoint's .json",
    )
    evaluate.add_argument(
        "--subjects",
        choices=["all", "held-out"],
        default="all",
        help="fetal-head: every frame, or only the subjects the weights were not trained on",
    )
    evaluate.add_argument("--records", type=Path, help="fetal-head: per-frame JSON lines here")
    evaluate.set_defaults(func=_cmd_evaluate, parser=evaluate)

    phantoms = sub.add_parser("phantoms", help="write synthetic studies with exact ground truth")
    phantoms.add_argument("kind", metavar="NAME", help=_NAMES)
    phantoms.add_argument("--out", type=Path, required=True)
    phantoms.add_argument("--count", type=int, default=10)
    phantoms.add_argument("--start", type=int, default=100000, help="first seed")
    phantoms.add_argument(
        "--dicom", choices=["mono", "rgb"], help="as DICOM (US for fetal-head, MR for fetal-brain)"
    )
    phantoms.add_argument("--frames", type=int, default=1, help="frames per US DICOM (cine)")
    phantoms.add_argument("--uncalibrated", action="store_true", help="no ultrasound regions")
    phantoms.add_argument(
        "--convention",
        choices=["parenchyma", "intracranial"],
        default="parenchyma",
        help="fetal-brain: the NIfTI masks' outline, without or with the extra-axial CSF "
        "(docs/fetal-brain.md; default: the default weights' parenchyma)",
    )
    phantoms.set_defaults(func=_cmd_phantoms, parser=phantoms)

    pack = sub.add_parser(
        "pack", help="write a training set as one file that travels with the code (a GPU run)"
    )
    pack.add_argument("task", metavar="NAME", help=_NAMES)
    pack.add_argument("--data", type=Path, required=True, help="the training folder, as for train")
    pack.add_argument("--out", type=Path, required=True, help="the pack to write (.npz)")
    pack.set_defaults(func=_cmd_pack, parser=pack)
