"""The corrected result's files: a SEG in a new series whose description says "corrected",
a TID 1500 SR that names the SR it replaces (Predecessor Documents Sequence, PS3.3 C.17.2),
and report.json; written by the pipeline's own SEG and SR builders."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from pydicom import Dataset

from worker.core.card import not_for_clinical_use
from worker.core.registry import ModelSpec
from worker.export.labels import series_description
from worker.export.outputs import ModelOutput
from worker.export.seg import build_seg, save_atomic
from worker.export.sr import build_sr
from worker.pipeline.loading import LoadedSeries
from worker.pipeline.run import OutputRecord

CORRECTED = " corrected"
SEMIAUTOMATIC = "SEMIAUTOMATIC"  # the model's segment, corrected by a person (PS3.3 C.8.20.4)


def predecessor(old_sr: Path) -> Dataset:
    """One Predecessor Documents Sequence item: the replaced SR by study, series, instance."""
    old = pydicom.dcmread(old_sr, stop_before_pixels=True)
    instance = Dataset()
    instance.ReferencedSOPClassUID = old.SOPClassUID
    instance.ReferencedSOPInstanceUID = old.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = old.SeriesInstanceUID
    series.ReferencedSOPSequence = [instance]
    item = Dataset()
    item.StudyInstanceUID = old.StudyInstanceUID
    item.ReferencedSeriesSequence = [series]
    return item


def write_corrected(
    series: LoadedSeries,
    output: ModelOutput,
    spec: ModelSpec,
    out_dir: Path,
    *,
    replaced_sr: Path | None,
    extras: dict[str, object],
) -> list[OutputRecord]:
    """SEG, SR and report.json of a corrected output in ``out_dir``."""
    seg = build_seg(series, output, spec)
    seg.SeriesDescription = series_description(f"medseg {spec.name}{CORRECTED}", output)
    for item in seg.SegmentSequence:
        item.SegmentAlgorithmType = SEMIAUTOMATIC
    save_atomic(seg, out_dir / "seg.dcm")
    outputs = [OutputRecord("seg", out_dir / "seg.dcm", str(seg.SOPInstanceUID))]
    sr = build_sr(series, output, spec, seg)
    if sr is not None:
        sr.SeriesDescription = series_description(
            f"medseg {spec.name} measurements{CORRECTED}", output
        )
        if replaced_sr is not None and replaced_sr.exists():
            sr.PredecessorDocumentsSequence = [predecessor(replaced_sr)]
        save_atomic(sr, out_dir / "sr.dcm")
        outputs.append(OutputRecord("sr", out_dir / "sr.dcm", str(sr.SOPInstanceUID)))
    report = out_dir / "report.json"
    report.write_text(
        json.dumps(
            {
                "model": spec.name,
                "model_version": spec.version,
                "status": "corrected",
                "validation": output.validation,
                "not_for_clinical_use": not_for_clinical_use(output.validation),
                "measurements": {m.key: m.value for m in output.measurements},
                "units": {m.key: m.unit for m in output.measurements},
                "warnings": output.warnings,
                **extras,
            },
            indent=2,
        )
        + "\n"
    )
    outputs.append(OutputRecord("json", report, None))
    return outputs
