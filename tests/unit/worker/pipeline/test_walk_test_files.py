"""Every file of pydicom's and pydicom-data's test sets, grouped into series as ``medseg
process`` groups a folder, ends with a model, a clear ``skipped`` reason or a clear
``failed`` reason, never an unexpected exception.

Bounded to stay fast: headers and routing for every file; pixel data is decoded only for
the series a model takes (that is where decoding happens in the pipeline); the models
themselves run in test_real_dicom.py on the files they take."""

from __future__ import annotations

import pytest

from tests.support.pydicom_files import installed_test_files
from worker.core.errors import MedsegError, SkippedError
from worker.pipeline.loading import decode_series, read_headers
from worker.pipeline.run import read_and_route


def test_every_test_file_ends_with_a_model_or_a_clear_reason() -> None:
    files = installed_test_files()
    if len(files) < 100:
        pytest.skip("pydicom-data is not installed: too few test files")
    groups, unreadable = read_headers(files)
    outcomes: dict[str, list[str]] = {"routed": [], "skipped": [], "failed": []}
    for path, reason in unreadable:
        assert reason and "Traceback" not in reason
        outcomes["skipped"].append(f"{path.name}: {reason}")
    for paths in groups.values():
        names = ",".join(p.name for p in paths[:3])
        try:
            headers, spec = read_and_route(paths)
            decode_series(headers)
        except SkippedError as exc:
            outcomes["skipped"].append(f"{names}: {exc}")
        except MedsegError as exc:  # the pipeline's permanent errors: a reason, not a crash
            outcomes["failed"].append(f"{names}: {exc}")
        else:
            outcomes["routed"].append(f"{names}: {spec.name}")
    for reasons in outcomes.values():
        for reason in reasons:
            assert reason.split(": ", 1)[1].strip(), reason
    assert any("RG1_" in r for r in outcomes["routed"])  # the chest radiographs
    assert any("not an image" in r for r in outcomes["skipped"])
