"""Conformance run: every output kind (CT, MR, US still and cine, CR SEG and SR) through
dciodvfy (0 errors; 0 warnings but those about values copied from the source), highdicom
read-back, dcmqi read-back where dcmqi is installed, and Orthanc ingest with a rendered
preview for every SEG (an SR has no pixels: Orthanc answers 415, by design)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import highdicom as hd
import pytest
from pydicom.data import get_testdata_file

from tests.support.factories import chest_series
from tests.support.tools import dciodvfy_errors, dciodvfy_warnings, need_tool
from worker.devtools.localstack import start_orthanc, stop
from worker.models.fetal_brain.mr_dicom import write_mr_stack
from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series

pytestmark = pytest.mark.integration
MODELS = ModelCache("cpu")
#: Source values the SEG/SR must copy as they are (Patient/Study modules).
COPIED = ("Referring Physician's Name",)


def _real(folder: Path, *names: str) -> list[Path]:
    return [Path(shutil.copy(str(get_testdata_file(n)), folder / n)) for n in names]


CASES: dict[str, Callable[[Path], list[Path]]] = {
    "ct": lambda d: chest_series(d, 0, slices=8),
    "mr": lambda d: write_mr_stack(make_fetal_brain_stack(820064, plane="TRA"), d),
    "us-still": lambda d: [write_us_phantom(d / "a.dcm", 200050).path],
    "us-cine": lambda d: [write_us_phantom(d / "a.dcm", 200051, frames=3).path],
    "cr": lambda d: _real(d, "RG1_UNCI.dcm", "RG1_UNCR.dcm"),
}


@pytest.fixture(scope="module")
def orthanc_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("orthanc")
    _, http_port, process = start_orthanc(
        root, need_tool("Orthanc"), {"Name": "medseg-conformance"}
    )
    try:
        yield f"http://127.0.0.1:{http_port}"
    finally:
        stop(process)


def _post(base: str, path: Path) -> str:
    request = urllib.request.Request(f"{base}/instances", data=path.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(json.load(answer)["ID"])


def _preview_status(base: str, orthanc_id: str) -> int:
    try:
        with urllib.request.urlopen(f"{base}/instances/{orthanc_id}/preview", timeout=30) as a:
            return int(a.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_output_kind_conforms(kind: str, tmp_path: Path, orthanc_http: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    result = run_series(CASES[kind](folder), MODELS, tmp_path / "out")
    outputs = {o.kind: o.path for o in result.outputs}
    for name in ("seg", "sr"):
        assert dciodvfy_errors(outputs[name]) == []
        warnings = [w for w in dciodvfy_warnings(outputs[name]) if not any(c in w for c in COPIED)]
        assert warnings == [], name
    seg = hd.seg.segread(outputs["seg"])
    assert seg.get_source_image_uids()
    hd.sr.srread(outputs["sr"])
    assert _preview_status(orthanc_http, _post(orthanc_http, outputs["seg"])) == 200
    _post(orthanc_http, outputs["sr"])  # indexed under the source study
    dcmqi = shutil.which("segimage2itkimage")
    if dcmqi is not None:
        done = subprocess.run(
            [dcmqi, "--inputDICOM", str(outputs["seg"]), "--outputDirectory", str(tmp_path)],
            capture_output=True,
            check=False,
        )
        if "FrameOfReferenceUID" in seg:
            assert done.returncode == 0, done.stderr
