from __future__ import annotations

from pathlib import Path

import pytest

from dicom_gateway.storage import (
    InsufficientSpaceError,
    check_free_space,
    instance_path,
    safe_component,
    write_atomic,
)


def test_well_formed_uid_is_kept() -> None:
    assert safe_component("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize(
    "uid", ["../../etc/passwd", "1.2/../../x", "", "1.2.3\\4", "a" * 65, "1..2"]
)
def test_hostile_uid_cannot_leave_the_root(tmp_path: Path, uid: str) -> None:
    path = instance_path(tmp_path, uid, uid, uid)
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert ".." not in path.relative_to(tmp_path).parts
    assert safe_component(uid) == safe_component(uid)  # stable


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.dcm"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["b.dcm"]


def test_write_atomic_cleans_up_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "c.dcm"

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", failing_replace)
    with pytest.raises(OSError):
        write_atomic(target, b"data")
    assert list(tmp_path.iterdir()) == []


def test_free_space_threshold(tmp_path: Path) -> None:
    check_free_space(tmp_path, 0)
    with pytest.raises(InsufficientSpaceError):
        check_free_space(tmp_path, 1 << 62)
