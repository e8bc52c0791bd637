"""Gateway ingest: DCMTK storescu -> medseg gateway vs -> DCMTK storescp, same files, one run.

Run: python benchmarks/ingest.py [--instances 500] [--database-url URL]
Prints instances/s and MB/s for both receivers and the ratio (goal: >= 0.5x storescp).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--database-url", default="", help="default: SQLite in the temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "send").mkdir()
        total_bytes = _make_files(root, args.instances)
        results = {}

        port = free_port()
        (root / "storescp").mkdir()
        scp = subprocess.Popen(
            ["storescp", "-aet", "STORESCP", "-od", str(root / "storescp"), str(port)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, process=scp)  # type: ignore[arg-type]
        results["DCMTK storescp"] = _send(root / "send", port, "STORESCP")
        stop(scp)  # type: ignore[arg-type]

        port = free_port()
        env = {
            "MEDSEG_DATA_DIR": str(root / "medseg"),
            "MEDSEG_PORT": str(port),
            "MEDSEG_HOST": "127.0.0.1",
            "MEDSEG_BROKER_URL": "redis://127.0.0.1:1/0",  # nothing is processed here
            "MEDSEG_SERIES_QUIET_SECONDS": "3600",
            "MEDSEG_MIN_FREE_BYTES": "0",
        }
        if args.database_url:
            env["MEDSEG_DATABASE_URL"] = args.database_url
        subprocess.run(
            [sys.executable, "-m", "worker.cli", "--log-level", "WARNING", "db", "upgrade"],
            env={**dcmtk_env(), **env},
            check=True,
            capture_output=True,
        )
        gateway = start_medseg(["--log-level", "WARNING", "gateway"], env, root / "gateway.log")
        wait_for_port(port, process=gateway)
        results["medseg gateway"] = _send(root / "send", port, "MEDSEG")
        stop(gateway)
        stored = len(list((root / "medseg" / "incoming").rglob("*.dcm")))

    reference = results["DCMTK storescp"]
    size_mb = total_bytes / 1e6
    print(f"{args.instances} CT instances of 512x512, {size_mb:.0f} MB, storescu, TCP_NODELAY=1")
    for name, seconds in results.items():
        print(
            f"{name:<16} {seconds:6.2f} s  {args.instances / seconds:7.1f} inst/s  "
            f"{total_bytes / seconds / 1e6:6.1f} MB/s  {reference / seconds:.2f}x storescp"
        )
    print(f"medseg stored {stored} of {args.instances} instances")


if __name__ == "__main__":
    main()
