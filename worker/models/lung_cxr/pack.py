"""A chest film training folder as one pack (``medseg pack lung-cxr --data DIR --out FILE``):
every film at full size as the networks read it (``lung_data.read_image``: display-like uint8),
its lung-field mask, patient, projection and annotation-QC verdict, so that training and the
full-resolution scoring run from the file alone, exactly as from the folder.

Films and masks are stored losslessly (worker.models._nn.pack); the cxr-lungs set (57 films,
640 pixels wide) packs to about 9 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worker.models._nn import pack
from worker.models.lung_cxr.films import Film, FilmArrays, read_films, read_full, to_arrays
from worker.models.lung_cxr.lung_data import LungPair

MODEL = "lung-cxr"


def write_pack(folder: Path, out: Path) -> dict[str, Any]:
    """The pack of a training folder (either layout ``read_films`` reads); returns its summary."""
    films = read_films(folder)
    images, masks = read_full(films)
    image_blob, image_offsets = pack.encode_images(images)
    mask_blob, mask_offsets = pack.encode_images([m.astype(np.uint8) * 255 for m in masks])
    meta = {"source": folder.name}
    size = pack.save(
        out,
        MODEL,
        meta,
        {
            "image_blob": image_blob,
            "image_offsets": image_offsets,
            "mask_blob": mask_blob,
            "mask_offsets": mask_offsets,
            "names": np.array([f.name for f in films]),
            "patients": np.array([f.patient for f in films]),
            "projections": np.array([f.projection for f in films]),
            "qc": np.array([f.qc for f in films]),
        },
    )
    return {
        **meta,
        "films": len(films),
        "patients": len({f.patient for f in films}),
        "qc_excluded": sum(bool(f.qc) for f in films),
        "bytes": size,
    }


def read_pack(path: Path, size: tuple[int, int]) -> tuple[list[Film], FilmArrays]:
    """The films of a pack and their arrays, at full size and at the network ``size``. A
    film's ``pair`` names only its file (the pack holds no paths)."""
    _, arrays = pack.load(path, MODEL)
    films = [
        Film(LungPair(Path(str(name)), ()), str(patient), str(projection), str(qc))
        for name, patient, projection, qc in zip(
            arrays["names"], arrays["patients"], arrays["projections"], arrays["qc"], strict=True
        )
    ]
    images = [
        pack.decode_image(arrays["image_blob"], arrays["image_offsets"], i)
        for i in range(len(films))
    ]
    masks = [
        pack.decode_image(arrays["mask_blob"], arrays["mask_offsets"], i) > 127
        for i in range(len(films))
    ]
    return films, to_arrays(images, masks, size)
