"""Chest CT: left and right lungs by a 2D U-Net over the axial slices.

The network (batch norm, padded convolutions) segments lung; left and right are the
two largest 3D components (split by erosion where they touch), named from patient coordinates,
exactly as the HU-threshold reference does. Volumes come from the slice positions. Routed ahead
of the threshold model unless MEDSEG_LUNG_CT_MODEL=threshold; a worker without the checkpoint
file runs the threshold model instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.core.registry import ModelSpec
from worker.core.tags import SeriesTags
from worker.export.outputs import ModelOutput
from worker.models.lung_ct.card import CARD
from worker.models.lung_ct_threshold import serve as lung_ct_threshold
from worker.pipeline.loading import LoadedSeries

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "lung_ct_unet.pt"
HU_WINDOW = (-1000.0, 400.0)  # mapped to 0..255 before the network's own normalisation
THRESHOLD = 0.5
# Slices per forward pass (128 x 128 inputs). Measured on a 2-core CPU for the 61 slices of
# pyradiomics lung2 (docs/lung.md): batch 64 took 2.3 s, 16 took 4.0 s, 1 took 7.1 s.
BATCH = 64


def weights_path() -> Path:
    from worker.core.settings import get_settings

    return get_settings().lung_ct_weights or DEFAULT_WEIGHTS


def accepts(tags: SeriesTags) -> bool:
    """Chest CT, unless MEDSEG_LUNG_CT_MODEL=threshold. Decided without looking for the
    checkpoint: where it is missing, the worker runs the threshold model (``weights_present``)."""
    from worker.core.settings import get_settings

    return get_settings().lung_ct_model == "unet" and lung_ct_threshold.accepts(tags)


def weights_present() -> bool:
    """Whether this process can load the checkpoint; if not, the threshold model runs."""
    weights = weights_path()
    if not weights.exists():
        logger.warning("lung CT U-Net checkpoint %s missing: the threshold model runs", weights)
        return False
    return True


def hu_to_uint8(hu: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    low, high = HU_WINDOW
    scaled = (np.asarray(hu, dtype=np.float32) - low) * (255.0 / (high - low))
    out: npt.NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


class LungCtUNet:
    """The checkpoint is loaded once (per worker process) and predicts many series."""

    def __init__(self, device: str, weights: Path | None = None) -> None:
        from worker.models._nn.predictor import UNetPredictor

        self.predictor = UNetPredictor(weights or weights_path(), device, batch_size=BATCH)
        self.weights_sha256 = self.predictor.sha256

    def probabilities(self, hu: np.ndarray) -> np.ndarray:
        """Lung probability of every voxel of a volume in HU (slices, rows, columns)."""
        return np.stack(self.predictor.probabilities(list(hu_to_uint8(hu))))

    def lungs(self, hu: np.ndarray) -> npt.NDArray[np.bool_]:
        """``probabilities(hu) >= THRESHOLD``, thresholded slice by slice."""
        # The window slice by slice: 7x faster than over the volume (the slices stay in cache).
        return self.predictor.masks([hu_to_uint8(s) for s in hu], THRESHOLD)

    def predict(self, series: LoadedSeries) -> ModelOutput:
        geometry = series.require_geometry()
        lungs = self.lungs(series.frames)
        left, right = lung_ct_threshold.split_left_right(lungs, geometry)
        output = lung_ct_threshold.lung_output(left, right, geometry, series.frames)
        output.extras["lung_ct_model"] = {
            "input_size": list(self.predictor.input_size),
            "weights_sha256": self.weights_sha256,
            "note": "trained on phantoms + one public CT; NOT clinically validated",
        }
        return output


def _load(device: str) -> LungCtUNet:
    return LungCtUNet(device)


SPEC = ModelSpec(
    name="lung-ct-unet",
    version="1.0.0",
    queue="gpu",
    description="Chest CT: left/right lungs by a 2D U-Net, volumes from slice positions",
    accepts=accepts,
    load=_load,
    load_weights=LungCtUNet,
    algorithm_family="ArtificialIntelligence",
    priority=10,
    runnable=weights_present,
    fallback="lung-ct-threshold",
    train={"lung-ct": "worker.models.lung_ct.train:command"},
    evaluate={"lung-ct": "worker.models.lung_ct.evaluate:command"},
    phantoms={"chest-ct": "worker.models.lung_ct.phantoms:command"},
    card=CARD,
)
