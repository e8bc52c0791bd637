"""The benchmark scripts still run and print their ratios (tiny sizes; nothing is timed here).

They are run by hand on quiet or GPU machines (docs/performance.md); this keeps them from
rotting between those runs, the GPU script above all, which runs on CPU here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.tools import need_tool

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        check=False,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_gpu_inference_script_runs_on_cpu() -> None:
    out = _run(
        "gpu_inference.py", "--device", "cpu", "--frames", "2", "--batches", "1,2",
        "--repeats", "1", "--threads", "1",
    )  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("bare forward")]
    assert len(rows) == 4  # batch 1 and 2, fp32 and bf16
    for row in rows:
        assert re.search(r"\d+\.\d+x\s+[01]\.\d{4}", row), row
    assert "predictor (whole frame path)" in out


def test_training_script_times_both_layouts_of_a_recipe() -> None:
    out = _run(
        "training_cpu.py", "--rounds", "1", "--steps", "1", "--threads", "1",
        "--recipes", "lung-ct",
    )  # fmt: skip
    rows = re.findall(r"^\| lung CT [^|]+ \| (\d+\.\d+) \| (\d+\.\d+) \| (\d+\.\d+)x \|$", out,
                      re.MULTILINE)  # fmt: skip
    assert len(rows) == 1, out
    nchw, nhwc, ratio = map(float, rows[0])
    assert nchw > 0 and nhwc > 0
    assert abs(ratio - nhwc / nchw) < 0.01 + 0.01 * ratio  # the ratio of the two printed rates


def test_ingest_script_compares_the_gateway_with_storescp_and_orthanc() -> None:
    need_tool("storescu")
    need_tool("storescp")
    need_tool("Orthanc")
    # Two senders only (the one-sender tables are the same code; the 2-core CI's time is short):
    # the receiver-per-CPU rows come with two senders. PostgreSQL only: its table runs every
    # path of the SQLite one (a URL apart) and the scratch databases and Orthanc's index plugin.
    out = _run(
        "ingest.py", "--instances", "6", "--rounds", "1", "--senders", "2",
        "--databases", "postgresql",
    )  # fmt: skip
    tables = re.findall(r"^(\d) sender\(s\), (\w+):$", out, re.MULTILINE)
    assert tables == [("2", "postgresql")]
    rows = re.findall(
        r"^\| ([^|]+) \| \d+\.\d+ \| \d+ \| \d+ \| (\d+\.\d+)x \| (\d+\.\d+)x \| (\d+) \|$",
        out,
        re.MULTILINE,
    )
    names = [name for name, *_ in rows[:6]]
    assert names == [
        "DCMTK storescp",
        "Orthanc, defaults",
        "Orthanc, SyncStorageArea off",
        "medseg, defaults",
        "medseg, DB transaction per C-STORE",
        "medseg, no fsync",
    ]
    per_cpu = 1 if (os.cpu_count() or 1) > 1 else 0  # a receiver per CPU, with two senders
    assert len(rows) == 6 + per_cpu
    assert sum(name.startswith("medseg, MEDSEG_RECEIVERS=") for name, *_ in rows) == per_cpu
    for name, vs_storescp, vs_orthanc, stored in rows:
        assert stored == "6", name  # every receiver stored (and recorded) every instance
        if name == "DCMTK storescp":
            assert vs_storescp == "1.00"
        if name == "Orthanc, defaults":
            assert vs_orthanc == "1.00"


def test_pipeline_script_prints_the_overhead_and_its_stages() -> None:
    out = _run("pipeline.py", "--series", "2", "--rounds", "1")
    for stage in ("decode", "preprocess", "infer", "postprocess", "SEG encode", "SR encode"):
        assert re.search(rf"^\s+{stage}.*\d+\.\d+\s+\d+\.\d+x", out, re.MULTILINE), stage
    assert re.search(r"^overhead over the forward pass: overlapped -?\d+\.\d %", out, re.MULTILINE)


def test_pipeline_script_compares_worker_batching_off_and_on() -> None:
    out = _run(
        "pipeline.py", "--series", "3", "--rounds", "1", "--worker-batch", "3",
        "--worker-only", "--predictor-batch", "3",
    )  # fmt: skip
    rows = re.findall(
        r"^batching (off|on) \(MEDSEG_BATCH_MAX=(\d)\)\s+(\d+\.\d+)\s+(\d+\.\d+)x\s+(\d+)$",
        out,
        re.MULTILINE,
    )
    assert [(mode, size, passes) for mode, size, _, _, passes in rows] == [
        ("off", "1", "3"),  # a forward pass per job
        ("on", "3", "1"),  # the three jobs' frames in one
    ]
    assert rows[0][3] == "1.00" and float(rows[1][2]) > 0
    assert "per round, on vs off" in out


def test_latency_script_measures_both_series_through_the_real_stack() -> None:
    need_tool("storescu")
    need_tool("redis-server")
    out = _run("latency.py", "--repeats", "1", "--ct-slices", "4", "--ct-size", "64")
    assert re.search(r"^US frame \(fetal head\)\s+\d+\.\d+ .*fetal-head-unet$", out, re.M)
    assert re.search(r"^CT 4x64²\s+\d+\.\d+ .*lung-ct-", out, re.MULTILINE)


def test_operator_latency_script_times_pages_and_commands_against_references(
    redis_url: str,
) -> None:
    out = _run(
        "operator_latency.py", "--jobs", "40", "--requests", "2", "--cli-runs", "1",
        "--redis", redis_url,
    )  # fmt: skip
    for broker in ("redis up", "redis down"):
        for path in ("/healthz", "/", "/jobs", "/failures"):
            row = rf"^{broker}\s+GET {re.escape(path)}\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\dx$"
            assert re.search(row, out, re.MULTILINE), (broker, path)
    assert re.search(r"^redis down\s+the overview says: broker unreachable$", out, re.M)
    for broker, command in (("redis up", "status"), ("redis up", "jobs"), ("redis down", "status")):
        row = rf"^{broker}\s+medseg {command}(\s+\d+\.\d+){{3}}x(\s+\d+\.\d+){{2}}x$"
        assert re.search(row, out, re.MULTILINE), (broker, command)
    assert re.search(r"^\s+python -c pass(\s+\d+\.\d+){2}\s+1\.0x\s+\d+\.\d+\s+", out, re.M)


def test_cli_status_script_times_status_against_references(redis_url: str) -> None:
    out = _run("cli_status.py", "--runs", "1", "--jobs", "20", "--redis", redis_url)
    for command in ("python -c pass", "medseg --help", "status (heartbeats)"):
        row = rf"^{re.escape(command)}\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\dx\s+\d+\.\d\d$"
        assert re.search(row, out, re.MULTILINE), command
    assert re.search(r"^status \(redis down\)\s+\d", out, re.MULTILINE)
    assert re.search(r"^status within 1 s: (yes|NO) \(\d+\.\d\d s, median of 1\)$", out, re.M)


def test_fetal_head_hc18_script_agrees_with_the_evaluation(tmp_path: Path) -> None:
    from worker.models.fetal_head.phantoms import write_hc18_layout

    write_hc18_layout(tmp_path / "hc18", [200000, 200002])  # phantoms in the HC18 layout
    out = _run("fetal_head_hc18.py", "--data", str(tmp_path / "hc18"), "--subjects", "all")
    assert "medseg process (mono)" in out and "medseg process (RGB)" in out
    assert "agreement within 0.1 mm: yes" in out


def test_study_search_script_times_every_search() -> None:
    out = _run("study_search.py", "--studies", "200", "--repeats", "1")
    assert out.splitlines()[0] == "sqlite, 200 studies; best of 1"
    assert re.search(r"^patient ID\s+\d+\.\d ms\s+4 match\(es\)$", out, re.MULTILINE)
    assert re.search(r"^state unrouted\s+\d+\.\d ms\s+20 match\(es\)$", out, re.MULTILINE)
    assert len(re.findall(r" ms ", out)) == 9


def test_models_script_times_every_model_end_to_end() -> None:
    out = _run("models.py", "--device", "cpu", "--quick", "--rounds", "1", "--threads", "1")
    rows = re.findall(
        r"^\| (.+) \((\S+)\) \| \d+\.\d+ \| (\d+\.\d+) \| \d+\.\d \| (\d+)% \| (\d+\.\d+)x \| "
        r"decode \d+ preprocess \d+ forward \d+ postprocess -?\d+ seg \d+ sr \d+ report -?\d+ "
        r"rest -?\d+ \|$",
        out,
        re.MULTILINE,
    )
    models = [model for _, model, _, _, _ in rows]
    assert models == ["lung-ct-unet", "fetal-brain-unet", "fetal-head-unet", "lung-cxr"], out
    for _, _, seconds, share, ratio in rows:
        assert float(seconds) > 0 and 0 < int(share) <= 100 and float(ratio) > 0


def test_dicom_write_script_compares_the_two_ways_of_saving_each_output() -> None:
    out = _run("dicom_write.py", "--slices", "8", "--size", "128", "--rounds", "1")
    rows = re.findall(
        r"^(.+? (?:SEG|SR))\s+(\d+)\s+\d+\.\d{4}\s+\d+\.\d{4}\s+\d+\.\d\dx  (\S+)$", out, re.M
    )
    assert [label for label, _, _ in rows] == [
        "chest CT 8x128x128 SEG",
        "chest CT 8x128x128 SR",
        "US 540x800 SEG",
        "US 540x800 SR",
    ]
    assert all(int(items) > 0 and same == "yes" for _, items, same in rows)
