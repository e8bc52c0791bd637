"""A U-Net checkpoint serving frames: loaded once per process, ``probabilities`` for frames of
any size (resized to the network's input and back), batched."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from worker.models._nn import checkpoint
from worker.models._nn.layout import memory_format

logger = logging.getLogger(__name__)


def preprocess(image: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Greyscale uint8 → network input (rows, columns) = ``size``, zero mean, unit-ish scale.
    A frame of several channels (rows, columns, channels: a slice with its neighbours) comes
    back channels first."""
    rows, cols = size
    if image.ndim == 3:  # channel by channel: OpenCV resizes at most 4 channels at once
        planes = [np.ascontiguousarray(image[..., k]) for k in range(image.shape[2])]
        return np.stack([preprocess(plane, size) for plane in planes])
    resized = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA).astype(np.float32)
    out: npt.NDArray[np.float32] = (resized / 255.0 - 0.25) / 0.25
    return out


class UNetPredictor:
    """A checkpoint loaded once per process; ``probabilities`` takes frames of any size."""

    def __init__(self, weights: Path, device: str = "cpu", batch_size: int | None = None) -> None:
        self.model, self.metadata = checkpoint.load(weights, device)
        self.device = device
        # Channels-last (NHWC) convolutions: on a 2-core CPU the lung CT U-Net's forward pass
        # over 61 slices took half the time of NCHW (docs/performance.md), logits within 1e-5.
        # Not measured on CUDA yet: there the layout stays as trained.
        self.memory_format = memory_format(device)
        self.model = self.model.to(memory_format=self.memory_format)
        # Measured (benchmarks/fetal_head_cpu.py): on CPU one frame per forward pass is fastest.
        self.batch_size = batch_size or (1 if device == "cpu" else 16)
        config: dict[str, Any] = self.metadata["config"]
        self.input_size = (int(config["input_rows"]), int(config["input_cols"]))
        #: Channels per frame: 1, or a slice with its neighbours (frames (rows, cols, channels)).
        self.in_channels = int(config.get("in_channels", 1))
        self.sha256: str = self.metadata["sha256"]

    def prepare(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.float32]]:
        """The network inputs, one per frame."""
        return [preprocess(img, self.input_size) for img in images]

    @torch.inference_mode()
    def forward(self, inputs: Sequence[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """Probability maps at the network's input size, ``batch_size`` frames per pass."""
        out: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(inputs), self.batch_size):
            batch = np.stack(inputs[start : start + self.batch_size])
            if batch.ndim == 3:  # one channel
                batch = batch[:, None]
            x = torch.from_numpy(batch).to(self.device, memory_format=self.memory_format)
            logits = self.model(x)
            out.extend(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
        return out

    def forward_grouped(
        self, groups: Sequence[Sequence[npt.NDArray[np.float32]]]
    ) -> list[list[npt.NDArray[np.float32]]]:
        """``forward`` over the inputs of several series at once (the frames of all of them
        in ``batch_size`` passes, not one series' frames per pass), split back per series."""
        flat = self.forward([x for inputs in groups for x in inputs])
        out: list[list[npt.NDArray[np.float32]]] = []
        start = 0
        for inputs in groups:
            out.append(flat[start : start + len(inputs)])
            start += len(inputs)
        return out

    def probabilities(
        self, images: Sequence[npt.NDArray[np.uint8]]
    ) -> list[npt.NDArray[np.float32]]:
        out: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]  # inputs made per chunk: memory
            small = self.forward(self.prepare(chunk))
            out.extend(full_size(prob, img.shape) for img, prob in zip(chunk, small, strict=True))
        return out

    def masks(
        self, images: Sequence[npt.NDArray[np.uint8]], threshold: float
    ) -> npt.NDArray[np.bool_]:
        """``probabilities(images) >= threshold`` as one boolean volume (frames of one size),
        each map thresholded as it is resized: no stack of full-size floats (1.2 GB for 300
        slices of 512²)."""
        out = np.zeros((len(images), *images[0].shape[:2]), dtype=bool)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            small = self.forward(self.prepare(chunk))
            for k, (img, prob) in enumerate(zip(chunk, small, strict=True), start=start):
                np.greater_equal(full_size(prob, img.shape), threshold, out=out[k])
        return out


def full_size(prob: npt.NDArray[np.float32], shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """A probability map resized (bilinear) to the frame's (rows, columns)."""
    full = cv2.resize(prob, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.asarray(full, dtype=np.float32)
