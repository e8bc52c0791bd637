"""Gateway ingest: DCMTK storescu -> medseg gateway vs DCMTK storescp and Orthanc, one run.

Run: python benchmarks/ingest.py [--instances 300] [--rounds 2] [--senders 1,4]
     [--databases sqlite,postgresql] [--postgres-url URL] [--variants all]

The same 512x512 CT files go, over one association per sender, to each receiver in turn, in
alternating rounds (best of each):

- DCMTK storescp (``--fork`` with several senders): writes the file, never fsyncs;
- Debian's Orthanc with its defaults (synchronous storage: each file fsynced, one index
  transaction per instance), and with ``SyncStorageArea`` off (storescp's durability); on
  PostgreSQL through the orthanc-postgresql index plugin;
- ``medseg gateway`` with its defaults, with per-C-STORE DB transactions
  (``MEDSEG_BATCH_INDEX=false``), without fsync (``MEDSEG_SYNC_STORAGE=false``) and, with
  several senders, one receiver process per sender (``MEDSEG_RECEIVERS``);
  ``--variants all`` adds pynetdicom's own receive path (``MEDSEG_FAST_RECEIVE=false``).

Each database gets a fresh one per receiver and round (SQLite in the temp dir; PostgreSQL
databases created next to ``--postgres-url`` and dropped). Prints seconds, instances/s, MB/s,
the ratio to storescp and to Orthanc's defaults, and checks that every instance was stored
and recorded by every receiver.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import text

from db.session import make_engine
from worker.devtools.localstack import (
    dcmtk_env,
    dcmtk_tool,
    free_port,
    scratch_postgres_database,
    start_medseg,
    start_orthanc,
    stop,
    wait_for_port,
)
from worker.models.lung_ct.phantoms import make_chest_phantom, write_chest_series

ORTHANC_PG_INDEX = Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so")
STORESCP = "DCMTK storescp"
ORTHANC = "Orthanc, defaults"
MEDSEG = "medseg, defaults"


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


def _split(files: list[Path], folder: Path, parts: int) -> Path:
    """Hard-link ``files`` into ``parts`` sub-folders of ``folder``, one per sender."""
    for k in range(parts):
        (folder / f"p{k}").mkdir(parents=True)
    for i, path in enumerate(files):
        os.link(path, folder / f"p{i % parts}" / path.name)
    return folder


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


@dataclass(frozen=True)
class Run:
    """One receiver's turn: where it works, what it is sent, which database it uses."""

    workdir: Path
    files: Path
    senders: int
    database: str
    postgres_url: str

    @contextlib.contextmanager
    def postgres(self, migrate: bool) -> Iterator[str]:
        with scratch_postgres_database(self.postgres_url, "ingest_bench", migrate=migrate) as url:
            yield url


def _storescp(run: Run) -> tuple[float, int]:
    port = free_port()
    out = run.workdir / "out"
    out.mkdir(parents=True)
    scp = subprocess.Popen(
        [
            dcmtk_tool("storescp"),
            *(["--fork"] if run.senders > 1 else []),
            "-aet",
            "STORESCP",
            "-od",
            str(out),
            str(port),
        ],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process=scp)  # type: ignore[arg-type]
    seconds = _send(run.files, port, "STORESCP")
    stop(scp)  # type: ignore[arg-type]
    return seconds, len(list(out.iterdir()))


def _orthanc_count(http_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=30) as r:
        return int(json.load(r)["CountInstances"])


def _orthanc(run: Run, sync: bool) -> tuple[float, int]:
    with contextlib.ExitStack() as stack:
        settings: dict[str, object] = {"DicomAet": "ORTHANC", "SyncStorageArea": sync}
        if run.database == "postgresql":
            url = make_engine(stack.enter_context(run.postgres(migrate=False))).url
            settings["Plugins"] = [str(ORTHANC_PG_INDEX)]
            settings["PostgreSQL"] = {
                "EnableIndex": True,
                "EnableStorage": False,
                "Host": url.host,
                "Port": url.port or 5432,
                "Database": url.database,
                "Username": url.username,
                "Password": url.password or "",
                "Lock": False,
            }
        dicom_port, http_port, orthanc = start_orthanc(run.workdir, _binary("Orthanc"), settings)
        try:
            seconds = _send(run.files, dicom_port, "ORTHANC")
            return seconds, _orthanc_count(http_port)
        finally:
            stop(orthanc)


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        sys.exit(f"{name} is not installed (apt-get install -y orthanc)")
    return found


def _medseg(run: Run, extra: dict[str, str]) -> tuple[float, int]:
    """Send to a fresh gateway with ``extra`` settings; (seconds, instances with a row)."""
    with contextlib.ExitStack() as stack:
        url = (
            stack.enter_context(run.postgres(migrate=True))
            if run.database == "postgresql"
            else f"sqlite:///{run.workdir / 'medseg.db'}"
        )
        port = free_port()
        env = {
            "MEDSEG_DATA_DIR": str(run.workdir),
            "MEDSEG_DATABASE_URL": url,
            "MEDSEG_PORT": str(port),
            "MEDSEG_HOST": "127.0.0.1",
            "MEDSEG_BROKER_URL": "redis://127.0.0.1:1/0",  # nothing is processed here
            "MEDSEG_SERIES_QUIET_SECONDS": "3600",
            "MEDSEG_MIN_FREE_BYTES": "0",
            **extra,
        }
        log = run.workdir / "gateway.log"
        gateway = start_medseg(["--log-level", "WARNING", "gateway"], env, log)
        wait_for_port(port, process=gateway)
        _wait_for_listeners(port, int(extra.get("MEDSEG_RECEIVERS", "1")))
        try:
            seconds = _send(run.files, port, "MEDSEG")
        except RuntimeError as exc:
            stop(gateway)
            sys.exit(f"{exc}\ngateway ({extra}) log:\n{log.read_text(errors='replace')[-3000:]}")
        stop(gateway)  # SIGTERM: a batched gateway writes its last rows before exiting
        engine = make_engine(url)
        with engine.connect() as conn:
            recorded = conn.execute(text("SELECT count(*) FROM instance")).scalar_one()
        engine.dispose()
    on_disk = len(list((run.workdir / "incoming").rglob("*.dcm")))
    return seconds, min(int(recorded), on_disk)


def _wait_for_listeners(port: int, count: int, timeout: float = 60.0) -> None:
    """Until ``count`` sockets listen on ``port`` (extra receivers take seconds to start:
    sending before they listen would time their start-up, not their receiving)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = sum(
            1
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
        )
        if listening >= count:
            return
        time.sleep(0.1)
    sys.exit(f"{count} receivers did not listen on port {port} in {timeout} s")


def _receivers(variants: str, senders: int) -> dict[str, dict[str, str] | str]:
    """Receiver name -> medseg settings, or the name of a reference receiver."""
    receivers: dict[str, dict[str, str] | str] = {
        STORESCP: "storescp",
        ORTHANC: "orthanc",
        "Orthanc, SyncStorageArea off": "orthanc-nosync",
        MEDSEG: {},
        "medseg, DB transaction per C-STORE": {"MEDSEG_BATCH_INDEX": "false"},
        "medseg, no fsync": {"MEDSEG_SYNC_STORAGE": "false"},
    }
    cpus = os.cpu_count() or 1
    if senders > 1 and cpus > 1:  # one receiver process per CPU
        receivers[f"medseg, MEDSEG_RECEIVERS={cpus}"] = {"MEDSEG_RECEIVERS": str(cpus)}
    if variants == "all":
        receivers["medseg, pynetdicom path"] = {"MEDSEG_FAST_RECEIVE": "false"}
    return receivers


def _one(run: Run, how: dict[str, str] | str) -> tuple[float, int]:
    if how == "storescp":
        return _storescp(run)
    if isinstance(how, str):
        return _orthanc(run, sync=how == "orthanc")
    return _medseg(run, how)


def _table(results: dict[str, float], stored: dict[str, int], args: argparse.Namespace) -> None:
    size_mb = args.total_bytes / 1e6
    reference, orthanc = results[STORESCP], results[ORTHANC]
    print(f"| receiver | seconds | inst/s | MB/s | vs storescp | vs Orthanc | stored of {args.n} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, seconds in results.items():
        print(
            f"| {name} | {seconds:.2f} | {args.n / seconds:.0f} | {size_mb / seconds:.0f} | "
            f"{reference / seconds:.2f}x | {orthanc / seconds:.2f}x | {stored[name]} |"
        )
    _budget(results, args.n)


def _budget(results: dict[str, float], n: int) -> None:
    """Where medseg's time per instance goes, against the goal of twice Orthanc's rate: the
    sender and the wire (storescp's whole cycle), our receive path's CPU (no fsync minus
    storescp) and durability (defaults minus no fsync). Per sender: several senders share
    the wall clock."""
    ms = {name: 1000 * seconds / n for name, seconds in results.items()}
    cycle, medseg, nosync = ms[STORESCP], ms[MEDSEG], ms["medseg, no fsync"]
    print(
        f"per instance: goal <= {ms[ORTHANC] / 2:.2f} ms (half of Orthanc's {ms[ORTHANC]:.2f});"
        f" medseg {medseg:.2f} = storescp's cycle {cycle:.2f} + receive path "
        f"{nosync - cycle:.2f} + fsyncs {medseg - nosync:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="best of N alternating rounds")
    parser.add_argument("--senders", default="1,4", help="comma-separated storescu counts")
    parser.add_argument("--databases", default="sqlite", help="sqlite,postgresql")
    parser.add_argument(
        "--postgres-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="a database whose role may create databases (fresh ones are made beside it)",
    )
    parser.add_argument("--variants", choices=["default", "all"], default="default")
    args = parser.parse_args()
    args.n = args.instances
    databases = args.databases.split(",")
    if "postgresql" in databases and not ORTHANC_PG_INDEX.exists():
        sys.exit(f"{ORTHANC_PG_INDEX} missing: apt-get install -y orthanc-postgresql")
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(
        f"{args.instances} CT instances of 512x512, storescu with TCP_NODELAY=1, one "
        f"association per sender, best of {args.rounds} alternating rounds; "
        f"{os.cpu_count()} CPUs, load at start {' '.join(load)}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "send").mkdir()
        args.total_bytes = _make_files(root, args.instances)
        files = sorted((root / "send").glob("*.dcm"))
        storescp: dict[int, tuple[float, int]] = {}
        for senders in (int(s) for s in args.senders.split(",")):
            batch = _split(files, root / f"senders{senders}", senders)
            receivers = _receivers(args.variants, senders)
            for database in databases:
                results: dict[str, float] = {}
                stored: dict[str, int] = {}
                for round_ in range(args.rounds):
                    for i, (name, how) in enumerate(receivers.items()):
                        if name == STORESCP and database != databases[0]:
                            continue  # no database: measured once per sender count
                        workdir = root / f"run-{senders}-{database}-{i}-{round_}"
                        run = Run(workdir, batch, senders, database, args.postgres_url)
                        workdir.mkdir()
                        seconds, stored[name] = _one(run, how)
                        results[name] = min(seconds, results.get(name, seconds))
                        shutil.rmtree(workdir)
                if STORESCP in results:
                    storescp[senders] = results[STORESCP], stored[STORESCP]
                else:  # measured with the first database
                    results = {STORESCP: storescp[senders][0], **results}
                    stored[STORESCP] = storescp[senders][1]
                print(f"\n{senders} sender(s), {database}:")
                _table(results, stored, args)


if __name__ == "__main__":
    main()
