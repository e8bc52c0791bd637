"""One training set as one ``.npz`` file that travels with the code (to a rented GPU, say):
images compressed one by one, numbers and names as plain arrays, read back with numpy and
OpenCV alone.

Images are stored as lossless WebP (OpenCV's, quality above 100), which here is a fifth
smaller than PNG on ultrasound frames; with ``bits=7`` the lowest bit is dropped before
encoding and restored by bit replication on reading (``(q << 1) | (q >> 6)``: 0 stays 0, 127
becomes 255), at most one grey level from the original, for another quarter less. Masks and
other near-binary images compress to almost nothing either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

FORMAT = "medseg-pack-1"


class PackError(ValueError):
    """The file is not a pack of this format, or not of the model it is read for."""


def encode_images(
    images: Sequence[npt.NDArray[np.uint8]], bits: int = 8
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Greyscale uint8 images as one byte array and N + 1 offsets into it."""
    if bits not in (7, 8):
        raise ValueError("bits: 7 or 8")
    chunks = []
    for image in images:
        stored = image >> 1 if bits == 7 else image
        ok, encoded = cv2.imencode(".webp", stored, [cv2.IMWRITE_WEBP_QUALITY, 101])
        if not ok:
            raise RuntimeError("OpenCV could not encode WebP")
        chunks.append(np.asarray(encoded, dtype=np.uint8).ravel())
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    blob = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
    return blob, offsets


def decode_image(
    blob: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], index: int, bits: int = 8
) -> npt.NDArray[np.uint8]:
    """Image ``index`` of ``encode_images``' output."""
    chunk = blob[int(offsets[index]) : int(offsets[index + 1])]
    image = cv2.imdecode(chunk, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise PackError(f"image {index}: not decodable (OpenCV without WebP?)")
    out = np.asarray(image, dtype=np.uint8)
    if bits == 7:
        out = np.asarray((out << 1) | (out >> 6), dtype=np.uint8)
    return out


def save(path: Path, model: str, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> int:
    """Write the pack (``meta`` as JSON, ``arrays`` as they are); returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"format": FORMAT, "model": model, **meta}, sort_keys=True)
    tmp = path.with_name(path.name + ".part")
    payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    with open(tmp, "wb") as fh:  # np.savez adds ".npz" to a bare name; a file object it keeps
        np.savez(fh, meta=np.array(header), **payload)
    tmp.replace(path)
    return path.stat().st_size


def load(
    path: Path, model: str, keys: Sequence[str] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a pack written for ``model``; the arrays named in ``keys`` (default
    all of them) read into memory."""
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data.files:
            raise PackError(f"{path}: not a medseg pack (no meta)")
        meta: dict[str, Any] = json.loads(str(data["meta"]))
        wanted = [k for k in data.files if k != "meta"] if keys is None else list(keys)
        arrays = {k: data[k] for k in wanted}
    if meta.get("format") != FORMAT:
        raise PackError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("model") != model:
        raise PackError(f"{path}: a pack of {meta.get('model')!r}, not of {model!r}")
    return meta, arrays


def is_pack(path: Path) -> bool:
    """Whether ``--data`` names a pack file rather than a folder."""
    return path.suffix == ".npz" and path.is_file()
