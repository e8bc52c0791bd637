"""DCMTK's programs are found even where pynetdicom's scripts of the same name come first."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from worker.devtools.localstack import dcmtk_tool, find_dcmtk_tool


def _executable(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_python_script_of_the_same_name_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_bin, system_bin = tmp_path / "venv-bin", tmp_path / "usr-bin"
    venv_bin.mkdir()
    system_bin.mkdir()
    _executable(venv_bin / "storescu", b"#!/usr/bin/python3\nfrom pynetdicom.apps import x\n")
    compiled = _executable(system_bin / "storescu", b"\x7fELF\x02\x01\x01")
    monkeypatch.setenv("PATH", os.pathsep.join([str(venv_bin), str(system_bin)]))
    assert find_dcmtk_tool("storescu") == str(compiled)


def test_only_scripts_means_dcmtk_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _executable(tmp_path / "echoscu", b"#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_dcmtk_tool("echoscu") is None
    with pytest.raises(RuntimeError, match="apt-get install -y dcmtk"):
        dcmtk_tool("echoscu")
