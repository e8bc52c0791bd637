"""Training packs (worker.models._nn.pack, fetal_head.frames): one file that gives back what the
folder gives, read with numpy and OpenCV alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.models._nn import pack
from worker.models.fetal_head.frames import PACK_SIZE, TEST, from_folder, from_pack, write_pack
from worker.models.fetal_head.phantoms import write_hc18_layout


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    speckle = rng.integers(0, 256, (40, 60), dtype=np.uint8)
    ramp = np.tile(np.arange(256, dtype=np.uint8), (3, 1))
    return [speckle, ramp, np.zeros((5, 7), np.uint8)]


def test_images_round_trip_exactly_or_within_one_grey_level_at_seven_bits() -> None:
    images = _images()
    blob, offsets = pack.encode_images(images)
    assert len(offsets) == 4 and offsets[-1] == len(blob)
    for i, image in enumerate(images):
        assert np.array_equal(pack.decode_image(blob, offsets, i), image)
    blob7, offsets7 = pack.encode_images(images, bits=7)
    for i, image in enumerate(images):
        back = pack.decode_image(blob7, offsets7, i, bits=7)
        assert np.abs(back.astype(int) - image).max() <= 1
    ramp = pack.decode_image(blob7, offsets7, 1, bits=7)
    assert (ramp.min(), ramp.max()) == (0, 255)  # black and white survive
    with pytest.raises(ValueError, match="7 or 8"):
        pack.encode_images(images, bits=6)


def test_a_pack_holds_its_model_and_format(tmp_path: Path) -> None:
    out = tmp_path / "p.npz"
    size = pack.save(out, "m", {"source": "x"}, {"numbers": np.arange(3), "names": ["a", "b"]})
    assert size == out.stat().st_size and pack.is_pack(out) and not pack.is_pack(tmp_path)
    meta, arrays = pack.load(out, "m")
    assert meta["source"] == "x" and meta["format"] == pack.FORMAT
    assert arrays["numbers"].tolist() == [0, 1, 2] and arrays["names"].tolist() == ["a", "b"]
    assert set(pack.load(out, "m", keys=("names",))[1]) == {"names"}
    with pytest.raises(pack.PackError, match="not of 'other'"):
        pack.load(out, "other")
    np.savez(tmp_path / "plain.npz", x=np.zeros(1))
    with pytest.raises(pack.PackError, match="not a medseg pack"):
        pack.load(tmp_path / "plain.npz", "m")


def test_the_fetal_head_pack_gives_back_the_folder(tmp_path: Path) -> None:
    data = tmp_path / "hc18"
    write_hc18_layout(data, range(300200, 300210))
    info = write_pack(data, tmp_path / "fetal-head.npz")
    assert info["frames"] == 10 and info["image_size"] == list(PACK_SIZE)
    assert info["test_frames"] == len(info["test_subjects"]) > 0
    for size in (PACK_SIZE, (32, 48)):
        packed = from_pack(tmp_path / "fetal-head.npz", size)
        folder = from_folder(data, size)
        assert packed.names == folder.names and packed.subjects == folder.subjects
        assert np.array_equal(packed.roles, folder.roles)  # the same held-out subjects
        assert np.array_equal(packed.masks, folder.masks)  # drawn from the same ellipses
        assert np.allclose(packed.hc_mm, folder.hc_mm)
        assert np.array_equal(packed.shapes, folder.shapes)
        diff = np.abs(packed.images.astype(int) - folder.images.astype(int)).max()
        assert diff <= (1 if size == PACK_SIZE else 2)  # 7-bit, then resized
    held = from_pack(tmp_path / "fetal-head.npz", (32, 48))
    assert sorted({held.subjects[i] for i in held.where(TEST)}) == info["test_subjects"]
    assert np.array_equal(held.truth(0), from_folder(data, (32, 48)).truth(0))
