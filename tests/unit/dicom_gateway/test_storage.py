from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicom_gateway.storage import (
    DurableDirs,
    InsufficientSpaceError,
    check_free_space,
    instance_path,
    write_atomic,
)
from worker.core.paths import safe_component


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
    write_atomic(target, b"first", DurableDirs(tmp_path))
    write_atomic(target, b"second", None)
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["b.dcm"]


def test_write_atomic_cleans_up_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "c.dcm"

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", failing_replace)
    with pytest.raises(OSError):
        write_atomic(target, b"data", DurableDirs(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_free_space_threshold(tmp_path: Path) -> None:
    check_free_space(tmp_path, 0)
    with pytest.raises(InsufficientSpaceError):
        check_free_space(tmp_path, 1 << 62)


def _recorded_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr("os.fsync", recording_fsync)
    return synced


def test_a_durable_write_makes_the_rename_and_new_directories_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = _recorded_fsyncs(monkeypatch)
    durable = DurableDirs(tmp_path)
    target = tmp_path / "study" / "series" / "1.dcm"
    write_atomic(target, [b"DI", b"CM"], durable)
    # the temporary file, then its directory after the rename, then the parents of the two
    # new directories, up to the storage root
    assert synced[0].startswith(str(target.parent / ".1.dcm."))
    assert synced[1:] == [str(target.parent), str(tmp_path / "study"), str(tmp_path)]

    synced.clear()
    write_atomic(target.with_name("2.dcm"), b"DICM", durable)
    assert synced[1:] == [str(target.parent)]  # no new directory: only the rename

    synced.clear()
    write_atomic(tmp_path / "study" / "other" / "1.dcm", b"DICM", durable)
    assert synced[1:] == [str(tmp_path / "study" / "other"), str(tmp_path / "study")]

    synced.clear()
    write_atomic(target.with_name("3.dcm"), b"DICM", None)
    assert synced == []


def test_a_directory_made_by_another_writer_is_settled_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another receiver process made the directories; this one can't know whether that
    process has fsynced their parents yet, so it does so itself, once."""
    target = tmp_path / "study" / "series" / "1.dcm"
    target.parent.mkdir(parents=True)
    synced = _recorded_fsyncs(monkeypatch)
    durable = DurableDirs(tmp_path)
    write_atomic(target, b"DICM", durable)
    assert synced[1:] == [str(target.parent), str(tmp_path / "study"), str(tmp_path)]
    synced.clear()
    write_atomic(target.with_name("2.dcm"), b"DICM", durable)
    assert synced[1:] == [str(target.parent)]


def test_durable_dirs_forget_the_oldest_beyond_their_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    durable = DurableDirs(tmp_path, limit=2)
    for name in ("a", "b", "c"):
        durable.settle(tmp_path / name)
    synced = _recorded_fsyncs(monkeypatch)
    durable.settle(tmp_path / "c")
    assert synced == []
    durable.settle(tmp_path / "a")  # forgotten: its parent is fsynced again
    assert synced == [str(tmp_path)]
