"""``medseg process`` overlapped (decode ahead, export behind) gives what the sequential
path gives: the same rows in the same order, the same files, each error on its own row."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest

import worker.pipeline.batch_overlap as overlap
from tests.support.factories import chest_series
from worker.models.fetal_head.serve import SPEC as FETAL_HEAD
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.batch import BatchRow, process_paths
from worker.pipeline.cache import ModelCache

MODELS = ModelCache("cpu")


def _inputs(root: Path) -> Path:
    """Fetal head US (a staged model), a short chest CT (not staged), an abdomen CT (no
    model: skipped), a US cine: in folders that sort in this order."""
    write_us_phantom(root / "a" / "us.dcm", 34)
    chest_series(root / "b", 0, slices=4)
    chest_series(root / "c", 1, slices=4, body_part="ABDOMEN", series_description="ABD")
    write_us_phantom(root / "d" / "cine.dcm", 32, frames=2)
    write_us_phantom(root / "e" / "us.dcm", 38)
    return root


def _comparable(rows: list[BatchRow], out: Path) -> list[dict[str, Any]]:
    """Rows with output paths relative to ``out``."""
    result = []
    for row in rows:
        data = row.as_json()
        data["outputs"] = [str(Path(p).relative_to(out)) for p in row.outputs]
        result.append(data)
    return result


def _sr_measurements(path: Path) -> list[tuple[str, float, str]]:
    sr: Any = hd.sr.srread(path)
    return [
        (m.name.value, float(m.value), m.unit.value)
        for group in sr.content.get_planar_roi_measurement_groups()
        + sr.content.get_volumetric_roi_measurement_groups()
        for m in group.get_measurements()
    ]


def test_overlapped_rows_and_files_equal_the_sequential_ones(tmp_path: Path) -> None:
    interval = sys.getswitchinterval()
    inputs = _inputs(tmp_path / "in")
    sequential, _ = process_paths([inputs], tmp_path / "seq", MODELS, overlap=False)
    calls: list[tuple[int, int]] = []
    overlapped, _ = process_paths(
        [inputs], tmp_path / "ovl", MODELS, lambda d, t: calls.append((d, t)), overlap=True
    )

    assert [r.status for r in sequential] == [
        "succeeded",
        "succeeded",
        "skipped",
        "succeeded",
        "succeeded",
    ]
    assert _comparable(overlapped, tmp_path / "ovl") == _comparable(sequential, tmp_path / "seq")
    assert calls == [(n, 15) for n in range(16)]  # three steps per series, each reported
    for seq_row, ovl_row in zip(sequential, overlapped, strict=True):
        for seq_path, ovl_path in zip(seq_row.outputs, ovl_row.outputs, strict=True):
            if seq_path.endswith("report.json"):
                assert Path(seq_path).read_text() == Path(ovl_path).read_text()
            elif seq_path.endswith("seg.dcm"):
                seq_seg, ovl_seg = pydicom.dcmread(seq_path), pydicom.dcmread(ovl_path)
                assert seq_seg.PixelData == ovl_seg.PixelData
                assert seq_seg.SegmentSequence == ovl_seg.SegmentSequence
            else:
                assert _sr_measurements(Path(seq_path)) == _sr_measurements(Path(ovl_path))
    assert sys.getswitchinterval() == interval  # lowered during the run only


def test_a_failing_series_in_the_middle_is_reported_and_the_others_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "in"
    for name, seed in (("a", 46), ("b", 42), ("c", 43), ("d", 44), ("e", 48)):
        write_us_phantom(inputs / name / "us.dcm", seed)
    broken = pydicom.dcmread(inputs / "b" / "us.dcm")
    del broken.PixelData  # fails to decode, in the loader thread
    broken.save_as(inputs / "b" / "us.dcm")
    bad_finish = str(pydicom.dcmread(inputs / "d" / "us.dcm").SeriesInstanceUID)
    model: Any = MODELS.get(FETAL_HEAD)
    real_forward, real_finish = type(model).forward, type(model).finish
    forward_calls: list[int] = []

    def forward(self: Any, prepared: Any) -> Any:
        forward_calls.append(1)
        if len(forward_calls) == 2:  # a, then c (b never gets to the forward pass)
            raise RuntimeError("forward pass broke")
        return real_forward(self, prepared)

    def finish(self: Any, series: Any, raw: Any) -> Any:
        if series.series_uid == bad_finish:
            raise ValueError("post-processing broke")
        return real_finish(self, series, raw)

    monkeypatch.setattr(type(model), "forward", forward)
    monkeypatch.setattr(type(model), "finish", finish)
    rows, _ = process_paths([inputs], tmp_path / "out", MODELS, overlap=True)

    order = [str(pydicom.dcmread(inputs / n / "us.dcm").SeriesInstanceUID) for n in "abcde"]
    assert [r.series_uid for r in rows] == order
    assert [r.status for r in rows] == ["succeeded", "failed", "failed", "failed", "succeeded"]
    assert rows[2].error == "RuntimeError: forward pass broke"
    assert rows[3].error == "ValueError: post-processing broke"
    assert rows[1].error and rows[1].outputs == []
    for row in (rows[0], rows[4]):
        assert [Path(p).name for p in row.outputs] == ["seg.dcm", "sr.dcm", "report.json"]
        assert all(Path(p).is_file() for p in row.outputs)


def test_queues_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(6):
        write_us_phantom(tmp_path / "in" / f"s{n}" / "us.dcm", 50 + n)
    loaded: list[int] = []
    forwarded: list[int] = []
    ahead: list[int] = []
    real_load, real_forward = overlap._load, overlap._forward

    def load(*args: Any) -> Any:
        item = real_load(*args)
        loaded.append(1)
        return item

    def forward(item: Any, models: ModelCache) -> None:
        ahead.append(len(loaded) - len(forwarded))
        real_forward(item, models)
        forwarded.append(1)

    monkeypatch.setattr(overlap, "_load", load)
    monkeypatch.setattr(overlap, "_forward", forward)
    rows, _ = process_paths([tmp_path / "in"], tmp_path / "out", MODELS, overlap=True)
    assert [r.status for r in rows] == ["succeeded"] * 6
    assert max(ahead) <= overlap.PREFETCH + 1
