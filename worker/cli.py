"""``medseg``: the one console script in front of every role."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from worker.logs import configure_logging


def _cmd_gateway(args: argparse.Namespace) -> int:
    from dicom_gateway.server import serve
    from worker.settings import get_settings

    serve(get_settings())
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.celery_app import app

    argv = ["worker", "-Q", args.queues, "--loglevel", args.log_level, "-n", args.name]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    app.worker_main(argv)
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from db.migrate import current, upgrade
    from worker.settings import get_settings

    url = get_settings().database_url
    if args.action == "upgrade":
        upgrade(url, args.revision)
    print(f"database at revision {current(url)}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from worker.registry import all_specs

    for spec in all_specs():
        print(f"{spec.name:24} {spec.version:8} queue={spec.queue:4} {spec.description}")
    return 0


def _format_measurements(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


def _cmd_process(args: argparse.Namespace) -> int:
    from worker.batch import process_paths
    from worker.device import resolve_device
    from worker.registry import ModelCache
    from worker.settings import get_settings

    models = ModelCache(resolve_device(get_settings().device))
    try:
        rows, skipped = process_paths(args.paths, args.out, models)
    except FileNotFoundError as exc:
        print(f"medseg process: {exc}", file=sys.stderr)
        return 2
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
    else:
        print(f"{'series':<20} {'modality':<8} {'model':<20} {'status':<10} measurements / error")
        for row in rows:
            detail = (
                _format_measurements(row.measurements) if row.status == "succeeded" else row.error
            )
            print(
                f"{row.series_uid[-20:]:<20} {row.modality:<8} {row.model or '-':<20} "
                f"{row.status:<10} {detail}"
            )
            for output in row.outputs:
                print(f"{'':<20} -> {output}")
    if not rows:
        print("medseg process: no DICOM series found", file=sys.stderr)
        return 1
    return 1 if any(row.status == "failed" for row in rows) else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from worker.device import resolve_device
    from worker.fetal.train import TrainConfig, train

    device = resolve_device(args.device)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, max_seconds=args.max_seconds
    )
    meta = train(args.data, args.out, config, device, progress=_progress, data_label=args.label)
    print(f"\nsaved {args.out} (+ .json)\nsha256 {meta['sha256']}\nval Dice {meta['val_dice']:.4f}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from worker.device import resolve_device
    from worker.fetal.evaluate import evaluate, format_summary
    from worker.fetal.predictor import DEFAULT_WEIGHTS

    summary = evaluate(
        args.data,
        args.weights or DEFAULT_WEIGHTS,
        resolve_device(args.device),
        progress=lambda i, n: _progress("evaluate", i, n),
    )
    print("\n" + format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    if args.kind == "chest-ct":
        from worker.phantoms.chest_ct import make_chest_phantom, write_chest_series

        for i in range(args.count):
            phantom = make_chest_phantom(seed=args.start + i)
            write_chest_series(phantom, args.out / f"ct{args.start + i:05d}")
    elif args.dicom:
        from worker.phantoms.us_dicom import write_us_phantom

        for i in range(args.count):
            seed = args.start + i
            write_us_phantom(
                args.out / f"us{seed:05d}.dcm",
                seed,
                frames=args.frames,
                rgb=args.dicom == "rgb",
                calibrated=not args.uncalibrated,
            )
    else:
        import os

        from worker.phantoms.fetal_head import write_hc18_parallel

        write_hc18_parallel(
            args.out, range(args.start, args.start + args.count), os.cpu_count() or 1
        )
    print(f"wrote {args.count} {args.kind} phantom(s) to {args.out}")
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from worker.demo import run_demo

    return run_demo(args.dir, series=args.series, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("gateway", help="run the DICOM C-STORE/C-ECHO receiver").set_defaults(
        func=_cmd_gateway
    )

    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--queues", default="gpu,cpu", help="comma-separated queues to consume")
    worker.add_argument("--concurrency", type=int, default=0, help="processes (default: CPUs)")
    worker.add_argument("--name", default="medseg@%h", help="Celery node name")
    worker.set_defaults(func=_cmd_worker)

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("revision", nargs="?", default="head")
    db.set_defaults(func=_cmd_db)

    sub.add_parser("models", help="list registered models").set_defaults(func=_cmd_models)

    process = sub.add_parser("process", help="run the pipeline on files/folders, no gateway")
    process.add_argument("paths", nargs="+", type=Path)
    process.add_argument("--out", type=Path, required=True, help="folder for SEG outputs")
    process.add_argument("--json", action="store_true", help="print one JSON object per series")
    process.set_defaults(func=_cmd_process)

    train = sub.add_parser("train", help="train a model on a data folder")
    train.add_argument("task", choices=["fetal-head"])
    train.add_argument("--data", type=Path, required=True, help="folder in the HC18 layout")
    train.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt + .json)")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--max-seconds", type=float, default=float("inf"))
    train.add_argument("--device", default="auto")
    train.add_argument("--label", default="", help="what the data is (stored in the metadata)")
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a model on a held-out data folder")
    evaluate.add_argument("task", choices=["fetal-head"])
    evaluate.add_argument("--data", type=Path, required=True, help="folder in the HC18 layout")
    evaluate.add_argument("--weights", type=Path, help="checkpoint (default: the shipped one)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", type=Path, help="also write the summary as JSON")
    evaluate.set_defaults(func=_cmd_evaluate)

    phantoms = sub.add_parser("phantoms", help="write synthetic studies with exact ground truth")
    phantoms.add_argument("kind", choices=["fetal-head", "chest-ct"])
    phantoms.add_argument("--out", type=Path, required=True)
    phantoms.add_argument("--count", type=int, default=10)
    phantoms.add_argument("--start", type=int, default=100000, help="first seed")
    phantoms.add_argument("--dicom", choices=["mono", "rgb"], help="fetal head as US DICOM")
    phantoms.add_argument("--frames", type=int, default=1, help="frames per US DICOM (cine)")
    phantoms.add_argument("--uncalibrated", action="store_true", help="no ultrasound regions")
    phantoms.set_defaults(func=_cmd_phantoms)

    demo = sub.add_parser("demo", help="gateway + worker + broker end to end on sample studies")
    demo.add_argument("--dir", type=Path, default=Path("demo-data"))
    demo.add_argument(
        "--series", type=int, default=2, help="sample studies of each kind (chest CT, fetal US)"
    )
    demo.add_argument("--timeout", type=float, default=180.0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    args.log_level = args.log_level.upper()
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
