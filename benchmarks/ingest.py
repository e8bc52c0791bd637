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
from worker.localstack import dcmtk_env, free_port, start_medseg, stop, wait_for_port
from worker.phantoms.chest_ct import make_chest_phantom, write_chest_series


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
    start = time.perf_counter()
    done = subprocess.run(
        ["storescu", "-aec", called, "+sd", "-nh", "127.0.0.1", str(port), str(folder)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"storescu failed: {done.stderr[-400:]}")
    return seconds


def _storescp(out: Path, files: Path) -> float:
    port = free_port()
    out.mkdir()
    scp = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
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
    seconds = _send(workdir.parent / "send", port, "MEDSEG")
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "send").mkdir()
        total_bytes = _make_files(root, args.instances)
        results = {}

        variants = {
            "medseg gateway": {},
            "medseg, batch index": {"MEDSEG_BATCH_INDEX": "true"},
        }
        stored: dict[str, int] = {}
        # Alternating rounds, best of each: the machine's load changes between receivers less.
        for round_ in range(args.rounds):
            seconds = _storescp(root / f"storescp{round_}", root / "send")
            results["DCMTK storescp"] = min(seconds, results.get("DCMTK storescp", seconds))
            for i, (name, extra) in enumerate(variants.items()):
                seconds, stored[name] = _medseg(root / f"medseg{i}-{round_}", args, extra)
                results[name] = min(seconds, results.get(name, seconds))

    reference = results["DCMTK storescp"]
    size_mb = total_bytes / 1e6
    print(f"{args.instances} CT instances of 512x512, {size_mb:.0f} MB, storescu, TCP_NODELAY=1")
    for name, seconds in results.items():
        print(
            f"{name:<20} {seconds:6.2f} s  {args.instances / seconds:7.1f} inst/s  "
            f"{total_bytes / seconds / 1e6:6.1f} MB/s  {reference / seconds:.2f}x storescp"
        )
    for name, count in stored.items():
        print(f"{name}: {count} of {args.instances} instances on disk and recorded")


if __name__ == "__main__":
    main()
