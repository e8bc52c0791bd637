"""The pixels of an uncompressed greyscale image, read straight from its Pixel Data.

pydicom's ``pixel_array`` looks up the image's pixel attributes, picks a decoder and runs it,
and keeps the array it returns on the dataset: about 0.75 ms a slice of CPU for a 512² CT
slice (0.2 s of a 300-slice series on a 2-core AMD EPYC), and a second copy of the volume held
as long as the datasets are. For the simplest and commonest case, one frame of one sample
stored little endian in 8 or 16 bits, that array is the Pixel Data's bytes as they are:
``native_pixels`` returns them as a read-only view, or, where fewer bits are stored than
allocated (12 of 16 in many CTs), a copy with the unused high bits cleared or sign-extended as
pydicom does (its ``correct_unused_bits``, on by default). Anything else (compressed or
big-endian transfer syntaxes, several frames or samples, a Pixel Data of another length) is
None: pydicom decodes it.
tests/unit/worker/pipeline/test_native_pixels.py holds the view equal to pydicom's array, value
and type, on every file of pydicom's test sets it applies to.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

_NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


def _attributes(ds: Dataset) -> tuple[int, int, int, int, bool] | None:
    """(rows, columns, bits allocated, bits stored, signed) where the fast path applies, else
    None."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        representation = int(ds.PixelRepresentation)
        samples = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if (
        rows < 1
        or columns < 1
        or allocated not in (8, 16)
        or not 1 <= stored <= allocated
        or representation not in (0, 1)
        or samples != 1
        or frames != 1
    ):
        return None
    return rows, columns, allocated, stored, representation == 1


def native_pixels(ds: Dataset) -> npt.NDArray[np.integer] | None:
    """The image's pixels as a read-only view on its Pixel Data (what ``ds.pixel_array``
    returns for it), or None where pydicom must decode them."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") not in _NATIVE or "PixelData" not in ds:
        return None
    found = _attributes(ds)
    if found is None:
        return None
    rows, columns, allocated, stored, signed = found
    data = ds.PixelData
    expected = rows * columns * allocated // 8
    if not isinstance(data, bytes) or len(data) not in (expected, expected + 1):  # + padding
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    pixels: npt.NDArray[np.integer] = np.frombuffer(data, dtype=dtype, count=rows * columns)
    if stored < allocated:  # as pydicom's decoders: shift the unused bits out and back
        pixels = pixels.copy()
        np.left_shift(pixels, allocated - stored, out=pixels)
        np.right_shift(pixels, allocated - stored, out=pixels)
    return pixels.reshape(rows, columns)
