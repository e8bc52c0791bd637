"""``native_pixels`` gives what pydicom's ``pixel_array`` gives, value and type, on every file
of pydicom's and pydicom-data's test sets it applies to, and leaves the rest to pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, RLELossless

from tests.support.factories import chest_series
from tests.support.pydicom_files import installed_test_files
from worker.pipeline.native_pixels import native_pixels


def test_every_test_file_it_reads_is_read_as_pydicom_reads_it() -> None:
    taken = left = 0
    for path in installed_test_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
                fast = native_pixels(ds)
                reference = None if fast is None else ds.pixel_array
            except Exception:  # damaged files: not this function's to read
                continue
        if fast is None:
            left += 1
            continue
        taken += 1
        assert reference is not None
        assert fast.dtype == reference.dtype, path.name
        np.testing.assert_array_equal(fast, reference, err_msg=path.name)
        if int(ds.BitsStored) == int(ds.BitsAllocated):
            assert not fast.flags.writeable  # a view on the file's bytes
    assert taken >= 15 and left >= 50  # both paths exercised (19 and over 100 here)


def test_the_service_s_own_ct_slices_take_it(tmp_path: Path) -> None:
    for path in chest_series(tmp_path, seed=1, slices=2):
        ds = pydicom.dcmread(path)
        fast = native_pixels(ds)
        assert fast is not None
        np.testing.assert_array_equal(fast, ds.pixel_array)


@pytest.mark.parametrize("signed", [1, 0])
def test_bits_above_the_stored_ones_are_cleared_or_sign_extended_as_pydicom_does(
    tmp_path: Path, signed: int
) -> None:
    ds = pydicom.dcmread(chest_series(tmp_path, seed=1, slices=1)[0])
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, signed
    raw = np.frombuffer(ds.PixelData, dtype="<i2" if signed else "<u2").copy()
    raw[:6] = np.array([0x7FFF, 0xFFFF, 0x1000, 0x0800, 0xF800, 5], dtype=np.uint16).view(raw.dtype)
    ds.PixelData = raw.tobytes()  # garbage in the four unused bits of the first pixels
    fast = native_pixels(ds)
    assert fast is not None
    reference = ds.pixel_array
    assert fast.dtype == reference.dtype
    np.testing.assert_array_equal(fast, reference)
    assert not np.array_equal(fast.ravel(), raw)  # the high bits did matter


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("NumberOfFrames", 2),
        ("SamplesPerPixel", 3),
        ("Rows", 129),  # the Pixel Data is not rows x columns x bytes
        ("TransferSyntaxUID", ExplicitVRBigEndian),
        ("TransferSyntaxUID", RLELossless),
    ],
)
def test_anything_else_is_left_to_pydicom(tmp_path: Path, change: str, value: object) -> None:
    ds = pydicom.dcmread(chest_series(tmp_path, seed=1, slices=1)[0])
    assert native_pixels(ds) is not None
    setattr(ds.file_meta if change == "TransferSyntaxUID" else ds, change, value)
    assert native_pixels(ds) is None
