"""Inference precision (MEDSEG_INFERENCE_PRECISION). bf16 against fp32 for every shipped
model: the same segments within a few boundary pixels, the same measurements within 1 %, the
same findings; on small inputs, so the check takes seconds even on a CPU that emulates bf16
(~100x slower than fp32 there). Reduced precision only where the device runs it natively:
elsewhere fp32, with a warning at start (CPU flags and CUDA capability mocked both ways)."""

from __future__ import annotations

import logging
import platform
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
from worker.models._nn import hardware
from worker.models._nn.metrics import dice
from worker.models.fetal_brain.mr_dicom import write_mr_stack
from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.models.lung_cxr.cr_dicom import write_cxr
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.pipeline import precision
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import LoadedSeries, load_series
from worker.pipeline.precision import autocast, resolve_precision


def _us(folder: Path) -> list[Path]:
    write_us_phantom(folder / "us.dcm", 900001)
    return [folder / "us.dcm"]


def _cxr(folder: Path) -> list[Path]:
    return [write_cxr(make_chest_xray(600001, size=320, opacities=1), folder / "cr.dcm")]


def _mr(folder: Path) -> list[Path]:
    # 51 slices of 192², the brain on 16-33; two through its middle: each slice is a 256²
    # forward pass, ~8 s in bf16 where the CPU has no bf16 units.
    return write_mr_stack(make_fetal_brain_stack(820000).central(2), folder)  # slices 24-25


def _ct(folder: Path) -> list[Path]:
    return chest_series(folder, 0, slices=6)


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


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """This CPU counts as having bf16 units (whether or not it has them)."""
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)


def test_the_cache_runs_forward_passes_in_the_precision_it_was_given(native_bf16: None) -> None:
    with ModelCache("cpu").autocast():
        assert not torch.is_autocast_enabled("cpu")
    with ModelCache("cpu", "bf16").autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "sequential"])
def test_medseg_process_runs_the_network_in_the_configured_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overlap: bool, native_bf16: None
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


def _cpu(monkeypatch: pytest.MonkeyPatch, *flags: str, onednn: bool = True) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"sse2", "avx2", *flags}))
    monkeypatch.setattr(hardware, "_onednn_bf16", lambda: onednn)


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_bf16_is_used_on_a_cpu_with_bf16_units(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    _cpu(monkeypatch, "avx512f", flag)
    assert hardware.bf16_native("cpu")
    cache = ModelCache("cpu", "bf16")
    assert cache.precision == "bf16"
    assert cache.precision_note() == "bf16 on cpu"


def test_bf16_requested_on_a_cpu_without_bf16_units_runs_fp32_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _cpu(monkeypatch, "avx512f")  # AVX-512 but no bf16 units (an AMD EPYC before Zen 4)
    with caplog.at_level(logging.WARNING, logger="worker.pipeline.precision"):
        cache = ModelCache("cpu", "bf16")
    assert cache.precision == "fp32"
    with cache.autocast():
        assert not torch.is_autocast_enabled("cpu")
    [warning] = caplog.records
    assert "bf16 requested, using fp32 on cpu" in warning.getMessage()
    assert "no bf16 units" in warning.getMessage()
    assert cache.precision_note().startswith("fp32 on cpu (bf16 requested: this CPU has no bf16")


def test_bf16_flags_that_onednn_does_not_use_run_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, "avx512_bf16", onednn=False)  # e.g. ONEDNN_MAX_CPU_ISA=AVX2
    assert resolve_precision("cpu", "bf16") == "fp32"


def test_fp16_is_for_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, "amx_bf16")
    assert resolve_precision("cpu", "fp16") == "fp32"
    assert resolve_precision("cuda", "fp16") == "fp16"
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp32"), ((8, 0), "bf16")])
def test_bf16_on_cuda_needs_compute_capability_8(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: Precision
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("cuda:0", "bf16") == expected


def test_fp32_is_never_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch)
    assert resolve_precision("cpu", "fp32") == "fp32"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 flags")
def test_cpu_flags_are_read_from_proc_cpuinfo() -> None:
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo")
    assert {"fpu", "sse2"} <= hardware.cpu_flags()


def test_medseg_models_says_which_precision_the_workers_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.cli.main import main
    from worker.core.settings import get_settings

    _cpu(monkeypatch)
    monkeypatch.setenv("MEDSEG_INFERENCE_PRECISION", "bf16")
    monkeypatch.setenv("MEDSEG_DEVICE", "cpu")
    get_settings.cache_clear()
    try:
        assert main(["models"]) == 0
    finally:
        get_settings.cache_clear()
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("inference: fp32 on cpu (bf16 requested: this CPU has no bf16 units")
