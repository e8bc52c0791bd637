"""Gateway ingest: DCMTK storescu -> medseg gateway vs -> DCMTK storescp, same files, one run.

Run: python benchmarks/ingest.py [--instances 500] [--rounds 2] [--database-url URL]
Prints instances/s and MB/s for storescp and the gateway (per-C-STORE DB transaction, and
MEDSEG_BATCH_INDEX) and the ratios (goal: >= 0.5x storescp), best of alternating rounds.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import text

from db.session import make_engine
from worker.devtools.localstack import (
    dcmtk_env,
    dcmtk_tool,
    free_port,
    start_medseg,
    stop,
    wait_for_port,
)
from worker.models.lung_ct.phantoms import make_chest_phantom, write_chest_series


def _make_files(folder: Path, count: int) -> int:
    """``count`` 512x512 CT instances: one phantom series copied under new UIDs."""
    template = write_chest_series(
        make_chest_phantom(slices=50, size=512, pixel_spacing=0.7), folder / "t"
    )
    written = 0
    series = 0
    while written < count:
        series_uid = generate_uid()
        for path in template:
            if written == count:
                break
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(
                folder / "send" / f"s{series:03d}_{written:05d}.dcm", enforce_file_format=True
            )
            written += 1
        series += 1
    shutil.rmtree(folder / "t")
    return sum(p.stat().st_size for p in (folder / "send").iterdir())


def _send(folder: Path, port: int, called: str) -> float:
    """storescu on every sub-folder of ``folder`` at once (one association each)."""
    parts = sorted(p for p in folder.iterdir() if p.is_dir())
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            [
                dcmtk_tool("storescu"),
                "-aec",
                called,
                "+sd",
                "-nh",
                "127.0.0.1",
                str(port),
                str(part),
            ],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in parts
    ]
    errors = [sender.communicate()[1] for sender in senders]
    seconds = time.perf_counter() - start
    for sender, err in zip(senders, errors, strict=True):
        if sender.returncode != 0:
            raise RuntimeError(f"storescu failed: {err[-400:]}")
    return seconds


def _split(folder: Path, parts: int) -> None:
    """Deal the files of ``folder`` into ``parts`` sub-folders, one per sender."""
    files = sorted(folder.glob("*.dcm"))
    for k in range(parts):
        (folder / f"p{k}").mkdir()
    for i, path in enumerate(files):
        path.rename(folder / f"p{i % parts}" / path.name)


def _storescp(out: Path, files: Path, fork: bool) -> float:
    port = free_port()
    out.mkdir()
    scp = subprocess.Popen(
        [
            dcmtk_tool("storescp"),
            *(["--fork"] if fork else []),
            "-aet",
            "STORESCP",
            "-od",
            *(str(out), str(port)),
        ],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process=scp)  # type: ignore[arg-type]
    seconds = _send(files, port, "STORESCP")
    stop(scp)  # type: ignore[arg-type]
    shutil.rmtree(out)
    return seconds


def _medseg(workdir: Path, args: argparse.Namespace, extra: dict[str, str]) -> tuple[float, int]:
    """Send to a fresh gateway with ``extra`` settings; (seconds, instances with a row)."""
    port = free_port()
    env = {
        "MEDSEG_DATA_DIR": str(workdir),
        "MEDSEG_PORT": str(port),
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_BROKER_URL": "redis://127.0.0.1:1/0",  # nothing is processed here
        "MEDSEG_SERIES_QUIET_SECONDS": "3600",
        "MEDSEG_MIN_FREE_BYTES": "0",
        **extra,
    }
    if args.database_url:
        env["MEDSEG_DATABASE_URL"] = args.database_url
    subprocess.run(
        [sys.executable, "-m", "worker.cli", "--log-level", "WARNING", "db", "upgrade"],
        env={**dcmtk_env(), **env},
        check=True,
        capture_output=True,
    )
    gateway = start_medseg(["--log-level", "WARNING", "gateway"], env, workdir / "gateway.log")
    wait_for_port(port, process=gateway)
    try:
        seconds = _send(workdir.parent / "send", port, "MEDSEG")
    except RuntimeError as exc:
        stop(gateway)
        log = (workdir / "gateway.log").read_text(errors="replace")[-3000:]
        sys.exit(f"{exc}\ngateway ({extra}) log:\n{log}")
    stop(gateway)  # SIGTERM: a batched gateway writes its last rows before exiting
    url = args.database_url or f"sqlite:///{workdir / 'medseg.db'}"
    engine = make_engine(url)
    with engine.connect() as conn:
        recorded = conn.execute(
            text("SELECT count(*) FROM instance WHERE path LIKE :root"),
            {"root": f"{workdir}%"},
        ).scalar_one()
    engine.dispose()
    on_disk = len(list((workdir / "incoming").rglob("*.dcm")))
    shutil.rmtree(workdir / "incoming")
    return seconds, min(int(recorded), on_disk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--database-url", default="", help="default: SQLite in the temp dir")
    parser.add_argument("--rounds", type=int, default=2, help="best of N alternating rounds")
    parser.add_argument(
        "--senders",
        type=int,
        default=1,
        help="parallel storescu; then storescp --fork and MEDSEG_RECEIVERS=N",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "send").mkdir()
        total_bytes = _make_files(root, args.instances)
        _split(root / "send", args.senders)
        results = {}

        variants = {
            "medseg, pynetdicom path": {"MEDSEG_FAST_RECEIVE": "false"},
            "medseg gateway": {},
            "medseg, batch index": {"MEDSEG_BATCH_INDEX": "true"},
            "medseg, batch, no fsync": {
                "MEDSEG_BATCH_INDEX": "true",
                "MEDSEG_SYNC_STORAGE": "false",
            },
        }
        stored: dict[str, int] = {}
        # Alternating rounds, best of each: the machine's load changes between receivers less.
        for round_ in range(args.rounds):
            seconds = _storescp(root / f"storescp{round_}", root / "send", args.senders > 1)
            results["DCMTK storescp"] = min(seconds, results.get("DCMTK storescp", seconds))
            receivers = {"MEDSEG_RECEIVERS": str(args.senders)} if args.senders > 1 else {}
            for i, (name, extra) in enumerate(variants.items()):
                workdir = root / f"medseg{i}-{round_}"
                seconds, stored[name] = _medseg(workdir, args, {**extra, **receivers})
                results[name] = min(seconds, results.get(name, seconds))

    reference = results["DCMTK storescp"]
    size_mb = total_bytes / 1e6
    print(
        f"{args.instances} CT instances of 512x512, {size_mb:.0f} MB, {args.senders} storescu "
        "at once (TCP_NODELAY=1)"
        + (f", storescp --fork, MEDSEG_RECEIVERS={args.senders}" if args.senders > 1 else "")
    )
    for name, seconds in results.items():
        print(
            f"{name:<26} {seconds:6.2f} s  {args.instances / seconds:7.1f} inst/s  "
            f"{total_bytes / seconds / 1e6:6.1f} MB/s  {reference / seconds:.2f}x storescp"
        )
    for name, count in stored.items():
        print(f"{name}: {count} of {args.instances} instances on disk and recorded")


if __name__ == "__main__":
    main()
