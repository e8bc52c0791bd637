"""Real chest films for training and validation: the image/mask pairs of a training folder
(see worker.models.lung_cxr.lung_data), each with its patient, and patient-grouped folds.

The patient of each image comes from ``images.csv`` (columns ``image``, ``patient_id`` and
optionally ``projection``) when the folder has one; otherwise every image is its own patient.

Annotation QC: ``cxr_lungs_qc.csv`` (beside this module; ``image,reason``) lists the films of
the cxr-lungs set whose masks are displaced from the lung they outline (reviewed by eye against
the anatomy, before any model saw them; see docs/lung.md). They are left out of training and
scored apart: a model cannot match a mask that misses the lung.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from worker.models._nn.folds import grouped_folds
from worker.models.lung_cxr.lung_data import LungPair, find_pairs, read_image, read_mask
from worker.models.lung_cxr.preprocess import NET_SIZE


@dataclass(frozen=True)
class Film:
    pair: LungPair
    patient: str
    projection: str  # "pa", "ap" or "" when unknown
    qc: str = ""  # why the mask is not trusted (annotation QC); "" when it is

    @property
    def name(self) -> str:
        return self.pair.image.name


QC_FILE = Path(__file__).resolve().parent / "cxr_lungs_qc.csv"


def read_qc(path: Path = QC_FILE) -> dict[str, str]:
    """image file name -> why its mask is not trusted."""
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        return {row["image"]: row["reason"] for row in csv.DictReader(fh)}


def read_films(folder: Path, qc: dict[str, str] | None = None) -> list[Film]:
    """Every image with a mask in ``folder``, with its patient, projection and QC verdict
    (``qc``: image name -> reason; default the shipped list)."""
    qc = read_qc() if qc is None else qc
    index: dict[str, dict[str, str]] = {}
    catalogue = folder / "images.csv"
    if catalogue.exists():
        with open(catalogue, newline="") as fh:
            index = {row["image"]: row for row in csv.DictReader(fh)}
    films = []
    for pair in find_pairs(folder):
        row = index.get(pair.image.name, {})
        films.append(
            Film(
                pair,
                row.get("patient_id") or pair.image.stem,
                (row.get("projection") or "").lower(),
                qc.get(pair.image.name, ""),
            )
        )
    return films


def patient_folds(films: Sequence[Film], k: int, seed: int = 0) -> list[list[int]]:
    """``k`` folds of film indices, every patient's films in one fold; patients shuffled with
    ``seed`` then dealt largest-first to the fold with the fewest films, so folds are even."""
    return grouped_folds([film.patient for film in films], k, seed)


@dataclass
class FilmArrays:
    """Full-size display images and masks, and the network-size tensors ``fit`` reads."""

    images: list[npt.NDArray[np.uint8]]
    masks: list[npt.NDArray[np.bool_]]
    net_images: npt.NDArray[np.uint8]
    net_masks: npt.NDArray[np.uint8]


def _net_image(image: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.asarray(resized, dtype=np.uint8)


def _net_mask(mask: npt.NDArray[np.bool_], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """A binary mask as a soft uint8 mask (0-255) at the network size."""
    soft = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.round(soft * 255).astype(np.uint8)


def read_full(
    films: Sequence[Film],
) -> tuple[list[npt.NDArray[np.uint8]], list[npt.NDArray[np.bool_]]]:
    """Every film and its mask at full size, as the networks read them."""
    images, masks = [], []
    for film in films:
        image = read_image(film.pair.image)
        mask = read_mask(film.pair.masks)
        if mask.shape != image.shape:
            raise ValueError(f"{film.name}: mask {mask.shape} and image {image.shape} differ")
        images.append(image)
        masks.append(mask)
    return images, masks


def to_arrays(
    images: list[npt.NDArray[np.uint8]],
    masks: list[npt.NDArray[np.bool_]],
    size: tuple[int, int] = NET_SIZE,
) -> FilmArrays:
    """Full-size films and masks with their network-``size`` (rows, columns) tensors."""
    return FilmArrays(
        images,
        masks,
        np.stack([_net_image(i, size) for i in images]),
        np.stack([_net_mask(m, size) for m in masks]),
    )


def load_films(films: Sequence[Film], size: tuple[int, int] = NET_SIZE) -> FilmArrays:
    """Every film at full size and at the network ``size`` (rows, columns)."""
    return to_arrays(*read_full(films), size)
