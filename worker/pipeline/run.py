"""One series through the stages: load → route → infer → export. Shared by tasks and batch.

``SeriesResult.timings`` has the seconds of each stage: ``load`` (read, route, decode),
``load_model``, ``preprocess`` / ``infer`` / ``postprocess`` (a model that splits ``predict``,
worker.core.registry.StagedModel; for others all of ``predict`` is ``infer``), ``export``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from worker.core.card import ValidationStatus, least_trusted, not_for_clinical_use
from worker.core.errors import NoModelError
from worker.core.registry import Model, ModelSpec, StagedModel, get_spec, off_reason
from worker.core.routing import route, unrouted_reason
from worker.export.outputs import Finding, MeasurementValue, ModelOutput
from worker.export.seg import write_seg
from worker.export.sr import write_sr
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import LoadedSeries, SeriesHeaders, decode_series, read_series

if TYPE_CHECKING:
    from worker.ops.dating import Dating

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputRecord:
    kind: str
    path: Path
    sop_instance_uid: str | None  # None for files that are not DICOM (report.json)


@dataclass
class SeriesResult:
    spec: ModelSpec
    measurements: list[MeasurementValue]
    outputs: list[OutputRecord]
    warnings: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    weights_sha256: str | None = None  # of the checkpoint actually loaded
    findings: list[Finding] = field(default_factory=list)
    review: list[str] = field(default_factory=list)  # the quality gate's reasons; empty: accepted
    #: The model card's status for the weights that ran (worker.core.card).
    validation: ValidationStatus = "unvalidated"

    @property
    def status(self) -> str:
        """``needs_review`` when the model's quality gate flagged it, else ``succeeded``."""
        return "needs_review" if self.review else "succeeded"


def run_loaded(
    series: LoadedSeries, spec: ModelSpec, models: ModelCache, out_dir: Path
) -> SeriesResult:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    model = models.get(spec)
    timings["load_model"] = time.perf_counter() - start

    if isinstance(model, StagedModel):  # its stages timed apart, autocast on forward only
        start = time.perf_counter()
        prepared = model.prepare(series)
        timings["preprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        with models.autocast():
            raw = model.forward(prepared)
        timings["infer"] = time.perf_counter() - start
        start = time.perf_counter()
        output = model.finish(series, raw)
        timings["postprocess"] = time.perf_counter() - start
    else:
        start = time.perf_counter()
        with models.autocast():
            output = model.predict(series)
        timings["infer"] = time.perf_counter() - start
    return export(series, output, spec, model, out_dir, timings=timings)


def export(
    series: LoadedSeries,
    output: ModelOutput,
    spec: ModelSpec,
    model: Model,
    out_dir: Path,
    *,
    timings: dict[str, float],
) -> SeriesResult:
    """SEG, SR and report.json of one model output in ``out_dir``; ``timings`` gets
    ``export`` added and goes into the result."""
    start = time.perf_counter()
    weights_sha256 = getattr(model, "weights_sha256", spec.weights_sha256)
    model_validation = spec.validation_for(weights_sha256)
    output.validation = least_trusted(model_validation, *output.components.values())
    output.warnings = [*series.warnings, *output.warnings]
    seg = write_seg(series, output, spec, out_dir / "seg.dcm")
    outputs = [OutputRecord("seg", out_dir / "seg.dcm", str(seg.SOPInstanceUID))]
    sr = write_sr(series, output, spec, seg, out_dir / "sr.dcm")
    if sr is not None:
        outputs.append(OutputRecord("sr", out_dir / "sr.dcm", str(sr.SOPInstanceUID)))
    result = SeriesResult(
        spec=spec,
        measurements=output.measurements,
        outputs=outputs,
        warnings=output.warnings,
        timings=timings,
        weights_sha256=weights_sha256,
        findings=output.findings,
        review=output.review,
        validation=output.validation,
    )
    report = out_dir / "report.json"
    report.write_text(
        json.dumps(
            {
                "model": spec.name,
                "model_version": spec.version,
                "status": result.status,
                "review": output.review,
                "validation": result.validation,
                "not_for_clinical_use": not_for_clinical_use(result.validation),
                "model_validation": model_validation,
                "components": output.components,
                "weights_sha256": result.weights_sha256,
                "measurements": {m.key: m.value for m in output.measurements},
                "units": {m.key: m.unit for m in output.measurements},
                "warnings": output.warnings,
                "findings": [f.as_json() for f in output.findings],
                **output.extras,
            },
            indent=2,
        )
        + "\n"
    )
    outputs.append(OutputRecord("json", report, None))
    timings["export"] = time.perf_counter() - start
    for warning in output.warnings:
        logger.warning("%s: %s", spec.name, warning)
    for reason in output.review:
        logger.warning("%s: needs review: %s", spec.name, reason)
    return result


def read_and_route(
    paths: Sequence[Path], spec: ModelSpec | None = None
) -> tuple[SeriesHeaders, ModelSpec]:
    """Read the headers and pick the series' model (``spec`` pins it; its fallback runs where
    it cannot). What no model takes (an SR, a presentation state, our own SEG coming back)
    is skipped here, before its pixel data, if any, is touched."""
    if spec is not None and (off := off_reason(spec)) is not None:
        raise NoModelError(off)  # queued by hand, or before the model was turned off
    headers = read_series(paths)
    if spec is None:
        spec = route(headers.tags)
        if spec is None:
            raise NoModelError(unrouted_reason(headers.tags))
    return headers, runnable(spec)


def load_and_route(
    paths: Sequence[Path], spec: ModelSpec | None = None
) -> tuple[LoadedSeries, ModelSpec, float]:
    """``read_and_route``, then decode; also the seconds reading and decoding took."""
    start = time.perf_counter()
    headers, spec = read_and_route(paths, spec)
    series = decode_series(headers)
    return series, spec, time.perf_counter() - start


def runnable(spec: ModelSpec) -> ModelSpec:
    """``spec``, or its fallback when it cannot run here (its weights are not on this disk):
    routing is decided without files, the fallback where the files are."""
    while spec.runnable is not None and spec.fallback is not None and not spec.runnable():
        logger.info("%s cannot run here: %s runs instead", spec.name, spec.fallback)
        spec = get_spec(spec.fallback)
    return spec


def run_series(
    paths: Sequence[Path],
    models: ModelCache,
    out_dir: Path,
    spec: ModelSpec | None = None,
    *,
    entered_ga: Dating | None = None,
) -> SeriesResult:
    """Process one series' files; ``spec`` pins the model (as a queued job does);
    ``entered_ga``: the study's GA by dates a reviewer entered (worker.ops.dating), which the
    growth standing uses over the files' Last Menstrual Date."""
    series, spec, load_seconds = load_and_route(paths, spec)
    series.entered_ga = entered_ga
    result = run_loaded(series, spec, models, out_dir)
    result.timings["load"] = load_seconds
    return result
