"""HC18 frames as arrays, from an HC18-layout folder or from its pack: network-size images and
soft masks, and what the full-size measurement needs (frame size, pixel size, reference HC, the
sonographer's ellipse), each frame with its subject and its role in the fixed split.

The pack (``medseg train fetal-head --data DIR --pack FILE``) holds the frames at
``PACK_SIZE``, resized from full size as served (INTER_AREA) and stored 7-bit (at most one grey
level off; 28 MB for the 799 frames instead of 37 MB lossless, so that it travels with the code
within a 64 MiB limit), and the ellipses, from which masks are drawn at any input size exactly
as from the annotation files. The roles are ``hc18_split.subject_split``'s with the recipe's
fractions and seed, fixed when the pack is written: the held-out subjects are the ones
``medseg evaluate fetal-head --subjects held-out`` reads from the checkpoint's metadata.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from worker.models._nn import pack
from worker.models._nn.threads import thread_map
from worker.models.fetal_head.biometry import ellipse_mask
from worker.models.fetal_head.hc18 import HC18Item, load_image, read_index, reference_ellipse
from worker.models.fetal_head.hc18_split import subject_of, subject_split

logger = logging.getLogger(__name__)

MODEL = "fetal-head"
PACK_SIZE = (320, 480)  # rows, columns: the largest input the recipes use
PACK_BITS = 7
TRAIN, TUNE, TEST = 0, 1, 2
#: Changes whenever the masks are drawn differently, so cached arrays are not reused.
MASK_RECIPE = "fill-erode1-ring-fit"


@dataclass
class HC18Frames:
    images: npt.NDArray[np.uint8]  # (N, rows, cols) network input, before normalisation
    masks: npt.NDArray[np.uint8]  # (N, rows, cols) soft head masks, 0-255
    names: list[str]
    subjects: list[str]
    pixel_mm: npt.NDArray[np.float64]
    hc_mm: npt.NDArray[np.float64]  # the published reference HC
    shapes: npt.NDArray[np.int64]  # (N, 2) full-size rows, columns
    ellipses: npt.NDArray[np.float64]  # (N, 5) the sonographer's ellipse, full-size pixels
    roles: npt.NDArray[np.int8]  # TRAIN, TUNE or TEST
    seed: int  # of the split that set the roles
    source: str  # the folder's or the pack's name

    def __len__(self) -> int:
        return len(self.names)

    def where(self, *roles: int) -> list[int]:
        return [i for i, r in enumerate(self.roles) if int(r) in roles]

    def shape_of(self, i: int) -> tuple[int, int]:
        return int(self.shapes[i, 0]), int(self.shapes[i, 1])

    def truth(self, i: int) -> npt.NDArray[np.bool_]:
        """The full-size reference mask (the filled ellipse), as ``hc18.load_mask`` gives it."""
        return ellipse_mask(self.shape_of(i), _params(self.ellipses[i]))

    def split_summary(self) -> dict[str, Any]:
        return {
            "method": "by subject (number before the first _), fixed seed",
            "seed": self.seed,
            "train_frames": int(np.sum(self.roles == TRAIN)),
            "tune_frames": int(np.sum(self.roles == TUNE)),
            "test_frames": int(np.sum(self.roles == TEST)),
            "test_subjects": sorted({self.subjects[i] for i in self.where(TEST)}),
        }


def _params(row: npt.NDArray[np.float64]) -> tuple[float, float, float, float, float]:
    return float(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4])


def soft_mask(
    shape: tuple[int, int], ellipse: npt.NDArray[np.float64], size: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """The filled ellipse drawn at full size, area-resized to ``size``, as 0-255."""
    full = ellipse_mask(shape, _params(ellipse)).astype(np.float32)
    soft = cv2.resize(full, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.round(soft * 255).astype(np.uint8)


def roles_of(
    items: Sequence[HC18Item], test: float, tune: float, seed: int
) -> npt.NDArray[np.int8]:
    """TRAIN, TUNE or TEST per item, by ``hc18_split.subject_split``."""
    split = subject_split(items, test, tune, seed)
    roles = np.zeros(len(items), dtype=np.int8)
    roles[split.tune] = TUNE
    roles[split.test] = TEST
    return roles


def _cache_key(items: Sequence[HC18Item]) -> str:
    listing = "\n".join(
        f"{i.image.name}:{i.image.stat().st_size}:{i.annotation.stat().st_size}" for i in items
    )
    return hashlib.sha256(listing.encode() + MASK_RECIPE.encode()).hexdigest()[:16]


def from_folder(
    folder: Path,
    size: tuple[int, int],
    *,
    split: tuple[float, float, int] = (0.2, 0.1, 0),
    cache: Path | None = None,
) -> HC18Frames:
    """Every frame of an HC18-layout folder at ``size``; ``split``: (test fraction, tune
    fraction, seed) of ``subject_split``. ``cache``: a folder keeping the resized arrays."""
    items = read_index(folder)
    rows, cols = size
    path = cache / f"hc18-frames-{rows}x{cols}-{_cache_key(items)}.npz" if cache else None
    if path is not None and path.exists():
        with np.load(path) as data:
            images, masks = data["images"], data["masks"]
            shapes, ellipses = data["shapes"], data["ellipses"]
    else:
        started = time.time()
        images = np.empty((len(items), rows, cols), dtype=np.uint8)
        masks = np.empty_like(images)
        shapes = np.empty((len(items), 2), dtype=np.int64)
        ellipses = np.empty((len(items), 5), dtype=np.float64)
        for i, item in enumerate(items):
            frame = load_image(item.image)
            shape, ellipse = reference_ellipse(item.annotation)
            shapes[i], ellipses[i] = shape, ellipse
            images[i] = cv2.resize(frame, (cols, rows), interpolation=cv2.INTER_AREA)
            masks[i] = soft_mask(shape, ellipses[i], size)
        logger.info("read %d frames at %dx%d in %.0f s", len(items), rows, cols,
                    time.time() - started)  # fmt: skip
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, images=images, masks=masks, shapes=shapes, ellipses=ellipses)
    return HC18Frames(
        images=images,
        masks=masks,
        names=[i.image.name for i in items],
        subjects=[subject_of(i) for i in items],
        pixel_mm=np.array([i.pixel_mm for i in items], dtype=np.float64),
        hc_mm=np.array([i.hc_mm for i in items], dtype=np.float64),
        shapes=shapes,
        ellipses=ellipses,
        roles=roles_of(items, *split),
        seed=split[2],
        source=folder.name,
    )


def write_pack(
    folder: Path, out: Path, *, split: tuple[float, float, int] = (0.2, 0.1, 0)
) -> dict[str, Any]:
    """The pack of an HC18-layout folder (see the module); returns what it holds."""
    frames = from_folder(folder, PACK_SIZE, split=split)
    blob, offsets = pack.encode_images(list(frames.images), bits=PACK_BITS)
    test, tune, seed = split
    meta = {
        "source": frames.source,
        "image_size": list(PACK_SIZE),
        "image_bits": PACK_BITS,
        "split": {"test_fraction": test, "tune_fraction": tune, "seed": seed},
        "mask_recipe": MASK_RECIPE,
    }
    size = pack.save(
        out,
        MODEL,
        meta,
        {
            "image_blob": blob,
            "image_offsets": offsets,
            "names": np.array(frames.names),
            "subjects": np.array(frames.subjects),
            "pixel_mm": frames.pixel_mm,
            "hc_mm": frames.hc_mm,
            "shapes": frames.shapes,
            "ellipses": frames.ellipses,
            "roles": frames.roles,
        },
    )
    return {**meta, "frames": len(frames), "bytes": size, **frames.split_summary()}


def from_pack(path: Path, size: tuple[int, int]) -> HC18Frames:
    """The frames of a pack at ``size`` (area-resized from the pack's when they differ)."""
    meta, arrays = pack.load(path, MODEL)
    if meta.get("mask_recipe") != MASK_RECIPE:
        raise pack.PackError(f"{path}: masks of recipe {meta.get('mask_recipe')!r}, not "
                             f"{MASK_RECIPE!r}: write the pack again")  # fmt: skip
    started = time.time()
    rows, cols = size
    n = len(arrays["names"])
    images = np.empty((n, rows, cols), dtype=np.uint8)
    masks = np.empty_like(images)
    shapes, ellipses = arrays["shapes"].astype(np.int64), arrays["ellipses"].astype(np.float64)

    def unpack(i: int) -> None:
        image = pack.decode_image(arrays["image_blob"], arrays["image_offsets"], i,
                                  int(meta["image_bits"]))  # fmt: skip
        if image.shape != size:
            image = np.asarray(cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA))
        images[i] = image
        masks[i] = soft_mask((int(shapes[i, 0]), int(shapes[i, 1])), ellipses[i], size)

    thread_map(unpack, range(n))  # shortens the start of a run on a many-core GPU host
    logger.info("unpacked %d frames at %dx%d in %.1f s", n, rows, cols, time.time() - started)
    return HC18Frames(
        images=images,
        masks=masks,
        names=[str(x) for x in arrays["names"]],
        subjects=[str(x) for x in arrays["subjects"]],
        pixel_mm=arrays["pixel_mm"].astype(np.float64),
        hc_mm=arrays["hc_mm"].astype(np.float64),
        shapes=shapes,
        ellipses=ellipses,
        roles=arrays["roles"].astype(np.int8),
        seed=int(meta["split"]["seed"]),
        source=f"{meta['source']} (pack {path.name})",
    )


def load_frames(
    data: Path,
    size: tuple[int, int],
    *,
    split: tuple[float, float, int] = (0.2, 0.1, 0),
    cache: Path | None = None,
) -> HC18Frames:
    """From a pack when ``data`` is one, else from the HC18-layout folder."""
    if pack.is_pack(data):
        return from_pack(data, size)
    return from_folder(data, size, split=split, cache=cache)
