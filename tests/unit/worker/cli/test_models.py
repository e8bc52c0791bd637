"""``medseg train|evaluate|phantoms NAME`` dispatch through the registry: a plugin model's
commands run like the shipped ones, an unknown NAME is a usage error listing the known ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.cli import main
from worker.core.registry import _discover
from worker.core.settings import Settings


@pytest.fixture
def with_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    settings = Settings(model_plugins=["tests.plugins.buildable"])
    monkeypatch.setattr("worker.core.settings.get_settings", lambda: settings)
    _discover.cache_clear()
    yield
    _discover.cache_clear()


def test_a_plugin_model_gets_train_evaluate_and_phantoms(
    with_plugin: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w.pt"
    assert main(["train", "buildable", "--data", str(tmp_path), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"device": "cpu", "data": str(tmp_path)}
    assert f"saved {out}" in capsys.readouterr().out

    summary = tmp_path / "summary.json"
    args = ["evaluate", "buildable", "--data", str(tmp_path), "--json", str(summary)]
    assert main(args) == 0
    assert "Dice 1.0000" in capsys.readouterr().out
    assert json.loads(summary.read_text())["dice"] == 1.0

    assert main(["phantoms", "buildable", "--out", str(tmp_path / "p"), "--count", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "phantom100000.txt",
        "phantom100001.txt",
    ]
    assert "wrote 2 buildable phantom(s)" in capsys.readouterr().out


def test_an_unknown_name_is_a_usage_error_that_lists_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "nonsense", "--data", str(tmp_path), "--out", str(tmp_path / "w.pt")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nonsense'" in err
    for name in ("fetal-head", "fetal-brain", "lung-ct", "lung-cxr", "pneumonia"):
        assert repr(name) in err


@pytest.mark.parametrize(
    ("phantom", "model", "expected"),
    [
        ("chest-xray", "lung-cxr", "expected CXR_png/ + ManualMask/"),
        ("chest-ct", "lung-ct", "no lung1_image.nrrd"),
    ],
)
def test_training_on_a_phantom_dicom_folder_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom: str, model: str, expected: str
) -> None:
    """Issue 21 item 10: `train` on the folder `phantoms` wrote crashed with a traceback."""
    data = tmp_path / "phantoms"
    assert main(["phantoms", phantom, "--out", str(data), "--count", "1"]) == 0
    capsys.readouterr()
    args = ["train", model, "--data", str(data), "--out", str(tmp_path / "w.pt"), "--steps", "1"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medseg train: {data}: ") and expected in err
    assert "holds DICOM files (as `medseg phantoms` writes)" in err
    assert len(err.splitlines()) == 1
