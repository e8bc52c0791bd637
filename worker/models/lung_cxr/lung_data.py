"""Lung-field training data: user folders (Montgomery or images/ + masks/) and phantoms.

Accepted layouts for ``medseg train lung-cxr --data DIR``:

* Montgomery County set: ``DIR/CXR_png/NAME.png`` with ``DIR/ManualMask/leftMask/NAME.png``
  and ``DIR/ManualMask/rightMask/NAME.png`` (the two masks are joined).
* Pairs (JSRT with the SCR masks, Shenzhen, anything else): ``DIR/images/NAME.{png,jpg,dcm}``
  with ``DIR/masks/NAME.png``; every non-zero mask pixel is lung field.

Images are greyscale (8 or 16 bit PNG, or DICOM, where MONOCHROME1 is inverted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from worker.core.errors import DataLayoutError
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.models.lung_cxr.preprocess import display_uint8, mask_to_net, to_net

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


@dataclass(frozen=True)
class LungPair:
    image: Path
    masks: tuple[Path, ...]  # joined by logical or


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """A radiograph file (PNG/JPEG or DICOM) as the networks' display-like uint8."""
    if path.suffix.lower() == ".dcm":
        import pydicom  # here only: the training path runs where pydicom is not installed

        ds = pydicom.dcmread(path)
        mono1 = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
        return display_uint8(ds.pixel_array, monochrome1=mono1)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: not a readable image")
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)
    return display_uint8(raw, monochrome1=False)


def read_mask(paths: Iterable[Path]) -> npt.NDArray[np.bool_]:
    mask: npt.NDArray[np.bool_] | None = None
    for path in paths:
        raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if raw is None:
            raise ValueError(f"{path}: not a readable mask image")
        mask = raw > 0 if mask is None else mask | (raw > 0)
    if mask is None:
        raise ValueError("no mask files")
    return mask


def find_pairs(folder: Path) -> list[LungPair]:
    """The image/mask pairs of a Montgomery or images/ + masks/ folder (see module doc)."""
    pairs: list[LungPair] = []
    if (folder / "CXR_png").is_dir():
        left_dir = folder / "ManualMask" / "leftMask"
        right_dir = folder / "ManualMask" / "rightMask"
        for image in sorted((folder / "CXR_png").glob("*.png")):
            masks = (left_dir / image.name, right_dir / image.name)
            if all(m.exists() for m in masks):
                pairs.append(LungPair(image, masks))
            else:
                logger.warning("%s: no left/right mask, skipped", image.name)
    elif (folder / "images").is_dir() and (folder / "masks").is_dir():
        for image in sorted((folder / "images").iterdir()):
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            mask = folder / "masks" / f"{image.stem}.png"
            if mask.exists():
                pairs.append(LungPair(image, (mask,)))
            else:
                logger.warning("%s: no masks/%s.png, skipped", image.name, image.stem)
    else:
        raise DataLayoutError(
            f"{folder}: expected CXR_png/ + ManualMask/{{leftMask,rightMask}}/ (Montgomery) "
            "or images/ + masks/"
        )
    if not pairs:
        raise DataLayoutError(f"{folder}: no image with a lung mask found")
    return pairs


def load_pairs(
    pairs: list[LungPair], progress: Callable[[int, int], None] | None = None
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Images and soft masks at the network size, ready for ``fit``."""
    images, masks = [], []
    for i, pair in enumerate(pairs):
        image = read_image(pair.image)
        mask = read_mask(pair.masks)
        if mask.shape != image.shape:
            mask = cv2.resize(
                mask.astype(np.uint8), image.shape[::-1], interpolation=cv2.INTER_NEAREST
            ).astype(bool)
        images.append(to_net(image))
        masks.append(mask_to_net(mask))
        if progress:
            progress(i + 1, len(pairs))
    return np.stack(images), np.stack(masks)


def phantom_set(seeds: Iterable[int]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Phantom images and soft lung masks at the network size."""
    images, masks = [], []
    for seed in seeds:
        phantom = make_chest_xray(seed)
        images.append(to_net(display_uint8(phantom.image, monochrome1=False)))
        masks.append(mask_to_net(phantom.lungs))
    return np.stack(images), np.stack(masks)


def write_montgomery_layout(folder: Path, seeds: Iterable[int]) -> list[str]:
    """Phantoms in the Montgomery layout (for tests and demos); returns the file names."""
    names = []
    for sub in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        phantom = make_chest_xray(seed)
        name = f"PHANTOM_{seed:06d}_0.png"
        cv2.imwrite(str(folder / "CXR_png" / name), phantom.image)
        cv2.imwrite(str(folder / "ManualMask/leftMask" / name), phantom.left_lung * np.uint8(255))
        cv2.imwrite(str(folder / "ManualMask/rightMask" / name), phantom.right_lung * np.uint8(255))
        names.append(name)
    return names
