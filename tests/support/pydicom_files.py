"""The DICOM test files installed with pydicom and pydicom-data (real files nobody here wrote)."""

from __future__ import annotations

from pathlib import Path

import pydicom.data


def installed_test_files() -> list[Path]:
    """The installed files only (``get_testdata_files`` would try to download the rest)."""
    folders = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # pydicom-data

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    files = sorted({p for folder in folders for p in folder.rglob("*") if p.is_file()})
    return [p for p in files if p.suffix.lower() not in (".py", ".txt", ".gz", ".json", ".pyc")]
