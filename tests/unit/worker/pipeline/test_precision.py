"""bf16 inference (MEDSEG_INFERENCE_PRECISION) against fp32, for every shipped model: the
same segments within a few boundary pixels, the same measurements within 1 %, the same
findings."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.factories import chest_series
from worker.core.registry import Model, get_spec
from worker.core.settings import Precision
from worker.export.outputs import ModelOutput
from worker.models._nn.metrics import dice
from worker.models.fetal_brain.mr_dicom import write_mr_stack
from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.models.lung_cxr.cr_dicom import write_cxr
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import LoadedSeries, load_series
from worker.pipeline.precision import autocast


def _us(folder: Path) -> list[Path]:
    write_us_phantom(folder / "us.dcm", 900001)
    return [folder / "us.dcm"]


def _cxr(folder: Path) -> list[Path]:
    return [write_cxr(make_chest_xray(600001, size=320, opacities=1), folder / "cr.dcm")]


def _mr(folder: Path) -> list[Path]:
    return write_mr_stack(make_fetal_brain_stack(820000), folder)


def _ct(folder: Path) -> list[Path]:
    return chest_series(folder, 0, slices=12)


INPUTS: dict[str, Callable[[Path], list[Path]]] = {
    "fetal-head-unet": _us,
    "fetal-brain-unet": _mr,
    "lung-ct-unet": _ct,
    "lung-cxr": _cxr,
}


@cache
def _model(name: str) -> Model:
    return get_spec(name).load("cpu")


def _predict(name: str, series: LoadedSeries, precision: Precision) -> ModelOutput:
    with autocast("cpu", precision):
        return _model(name).predict(series)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_bf16_gives_the_fp32_result(name: str, tmp_path: Path) -> None:
    series = load_series(INPUTS[name](tmp_path))
    full = _predict(name, series, "fp32")
    reduced = _predict(name, series, "bf16")
    assert [s.kind.label for s in reduced.segments] == [s.kind.label for s in full.segments]
    for ours, reference in zip(reduced.segments, full.segments, strict=True):
        assert reference.mask.any()
        assert dice(ours.mask, reference.mask) >= 0.98, ours.kind.label
    values = {m.key: m.value for m in full.measurements}
    assert values
    for m in reduced.measurements:
        assert m.value == pytest.approx(values[m.key], rel=0.01, abs=0.5), m.key
    assert len(reduced.findings) == len(full.findings)


def test_the_cache_runs_forward_passes_in_the_precision_it_was_given() -> None:
    with ModelCache("cpu").autocast():
        assert not torch.is_autocast_enabled("cpu")
    with ModelCache("cpu", "bf16").autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "sequential"])
def test_medseg_process_runs_the_network_in_the_configured_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overlap: bool
) -> None:
    from worker.models._nn.predictor import UNetPredictor
    from worker.pipeline.batch import process_paths

    seen: list[bool] = []
    real_forward = UNetPredictor.forward

    def spy(self: UNetPredictor, inputs: Any) -> Any:
        seen.append(torch.is_autocast_enabled("cpu"))
        return real_forward(self, inputs)

    monkeypatch.setattr(UNetPredictor, "forward", spy)
    _us(tmp_path)
    rows, _ = process_paths(
        [tmp_path / "us.dcm"], tmp_path / "out", ModelCache("cpu", "bf16"), overlap=overlap
    )
    assert [row.status for row in rows] == ["succeeded"]
    assert seen == [True]
