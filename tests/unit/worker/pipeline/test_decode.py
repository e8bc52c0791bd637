"""Pixel decoding: the float32 rescale gives exactly what pydicom's float64 Modality LUT gives
(cast to float32), the series is stacked frame by frame in order, and each file is parsed
once (its pixel data deferred from the header read to the decoding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.pixels.processing import apply_modality_lut

from tests.support.factories import chest_series, minimal_image
from worker.core.errors import InputError
from worker.pipeline import loading
from worker.pipeline.loading import load_series

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _image(values: np.ndarray, signed: bool, slope: str, intercept: str) -> Dataset:
    ds = minimal_image(CT_IMAGE, "CT")
    ds.Rows, ds.Columns = values.shape
    ds.PixelRepresentation = int(signed)
    ds.PixelData = values.astype("<i2" if signed else "<u2").tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    return ds


def _reference(ds: Dataset) -> np.ndarray:
    return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)


@pytest.mark.parametrize(
    ("signed", "slope", "intercept", "fast"),
    [
        (True, "1", "-1024", True),  # CT as most scanners write it
        (False, "1.0", "-1024.0", True),
        (False, "2", "-8192", True),
        (True, "200", "100000", True),  # near float32's integer range, still exact
        (False, "256", "0", False),  # 65535 * 256 is beyond it: pydicom's path
        (True, "0.5", "-1024", False),
        (False, "1", "-0.5", False),
    ],
)
def test_the_float32_rescale_is_pydicoms_to_the_bit(
    signed: bool, slope: str, intercept: str, fast: bool
) -> None:
    rng = np.random.default_rng(7)
    low, high = (-32768, 32767) if signed else (0, 65535)
    values = rng.integers(low, high, size=(16, 16), endpoint=True)
    values.flat[:2] = low, high
    ds = _image(values, signed, slope, intercept)
    assert (loading._integral_rescale(ds.pixel_array, ds) is not None) is fast
    decoded = loading._decode(ds)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, _reference(ds))


def test_a_slope_without_an_intercept_is_not_applied() -> None:
    """pydicom applies a rescale only when both are present; so do we."""
    ds = _image(np.arange(64).reshape(8, 8), False, "2", "0")
    del ds.RescaleIntercept
    assert loading._integral_rescale(ds.pixel_array, ds) is None
    np.testing.assert_array_equal(loading._decode(ds), np.arange(64).reshape(8, 8))


def test_a_series_is_stacked_in_slice_order(tmp_path: Path) -> None:
    paths = chest_series(tmp_path, seed=3, slices=6)
    series = load_series(list(reversed(paths)))
    expected = np.stack([_reference(ds) for ds in series.datasets])
    assert series.frames.dtype == np.float32
    np.testing.assert_array_equal(series.frames, expected)


def test_fewer_frames_than_the_headers_announce_are_refused() -> None:
    ds = _image(np.zeros((8, 8)), True, "1", "-1024")
    ds.NumberOfFrames = 2  # two frames announced, one stored
    with pytest.raises(InputError, match="cannot decode pixel data"):
        loading._decode_all([ds])


def test_each_file_is_parsed_once_its_pixels_read_when_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = chest_series(tmp_path, seed=3, slices=4)  # 128², 32 KB a slice: deferred
    reads: list[Path] = []
    dcmread = pydicom.dcmread

    def counted(path: Path, **kwargs: Any) -> Dataset:
        reads.append(Path(path))
        return dcmread(path, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted)
    headers = loading.read_series(paths)
    deferred = [ds.get_item(0x7FE00010, keep_deferred=True) for ds in headers.headers]
    assert all(element.value is None for element in deferred)  # in the file until decoded
    series = loading.decode_series(headers)
    assert sorted(reads) == sorted(paths)  # once each
    expected = np.stack([_reference(dcmread(ds.filename)) for ds in series.datasets])
    np.testing.assert_array_equal(series.frames, expected)  # as a fresh read decodes them


def test_a_file_gone_between_its_header_and_its_pixels_is_an_input_error(
    tmp_path: Path,
) -> None:
    paths = chest_series(tmp_path, seed=3, slices=4)
    headers = loading.read_series(paths)
    paths[1].unlink()
    with pytest.raises(InputError, match=f"cannot decode pixel data: .*{paths[1].name}"):
        loading.decode_series(headers)
