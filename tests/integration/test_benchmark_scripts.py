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


def test_ingest_script_sends_to_storescp_and_every_gateway_variant() -> None:
    need_tool("storescu")
    need_tool("storescp")
    out = _run("ingest.py", "--instances", "6", "--rounds", "1")
    ratios = re.findall(r"^(.+?)\s+\d+\.\d+ s .* (\d+\.\d+)x storescp$", out, re.MULTILINE)
    assert [name.strip() for name, _ in ratios] == [
        "DCMTK storescp",
        "medseg, pynetdicom path",
        "medseg gateway",
        "medseg, batch index",
        "medseg, batch, no fsync",
    ]
    assert ratios[0][1] == "1.00"
    assert out.count("6 of 6 instances on disk and recorded") == 4


def test_pipeline_script_prints_the_overhead_and_its_stages() -> None:
    out = _run("pipeline.py", "--series", "2", "--rounds", "1")
    for stage in ("decode", "preprocess", "infer", "postprocess", "SEG encode", "SR encode"):
        assert re.search(rf"^\s+{stage}.*\d+\.\d+\s+\d+\.\d+x", out, re.MULTILINE), stage
    assert re.search(r"^overhead over the forward pass: overlapped -?\d+\.\d %", out, re.MULTILINE)


def test_latency_script_measures_both_series_through_the_real_stack() -> None:
    need_tool("storescu")
    need_tool("redis-server")
    out = _run("latency.py", "--repeats", "1", "--ct-slices", "4", "--ct-size", "64")
    assert re.search(r"^US frame \(fetal head\)\s+\d+\.\d+ .*fetal-head-unet$", out, re.M)
    assert re.search(r"^CT 4x64²\s+\d+\.\d+ .*lung-ct-", out, re.MULTILINE)


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
