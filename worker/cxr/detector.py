"""Pneumonia opacity detector: torchvision Faster R-CNN (MobileNetV3-Large FPN), built with
no pretrained weights (nothing is downloaded), checkpointed as fp16 + JSON with its sha256."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torchvision.models.detection import FasterRCNN, fasterrcnn_mobilenet_v3_large_320_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from worker.cxr.preprocess import NET_SIZE, to_net
from worker.fetal.checkpoint import CheckpointError, metadata_path, read_metadata, sha256_of

logger = logging.getLogger(__name__)

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn+box_head256"
BOX_HEAD = 256  # torchvision's default is 1024: 16x the cost on CPU, no gain on one class
DEFAULT_DETECTOR_WEIGHTS = (
    Path(__file__).resolve().parent.parent / "models" / "weights" / "pneumonia_frcnn.pt"
)


def build_detector() -> FasterRCNN:
    """Two classes (background, opacity); the transform's resize is the identity at NET_SIZE."""
    fpn_channels = 256
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=2,
        min_size=NET_SIZE[0],
        max_size=NET_SIZE[1],
        box_score_thresh=0.01,
        box_detections_per_img=20,
        # Sized for CPU training: few proposals and sampled RoIs (the box head is the cost).
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=150,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=64,
    )
    model.roi_heads.box_head = TwoMLPHead(fpn_channels * 7 * 7, BOX_HEAD)
    model.roi_heads.box_predictor = FastRCNNPredictor(BOX_HEAD, 2)
    return model


def as_tensor(image: npt.NDArray[np.uint8]) -> torch.Tensor:
    """A network-size uint8 image as the 3-channel float tensor the backbone reads."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    return x.expand(3, *x.shape).contiguous()


def save_detector(model: FasterRCNN, metadata: dict[str, Any], weights: Path) -> str:
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().cpu().half() if v.is_floating_point() else v.cpu()
        for k, v in model.state_dict().items()
    }
    config = {"arch": ARCH, "input_rows": NET_SIZE[0], "input_cols": NET_SIZE[1], "classes": 2}
    torch.save({"state_dict": state, "config": config}, weights)
    digest = sha256_of(weights)
    meta = {**metadata, "config": config, "weights": weights.name, "sha256": digest}
    metadata_path(weights).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return digest


def load_detector(weights: Path, device: str) -> tuple[FasterRCNN, dict[str, Any]]:
    meta = read_metadata(weights)
    actual = sha256_of(weights)
    if actual != meta.get("sha256"):
        raise CheckpointError(f"{weights}: sha256 {actual} does not match metadata")
    payload = torch.load(weights, map_location="cpu", weights_only=True)
    if payload["config"].get("arch") != ARCH:
        raise CheckpointError(f"{weights}: unknown architecture {payload['config'].get('arch')!r}")
    model = build_detector()
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    )
    model.eval().to(device)
    return model, meta


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in source image pixels
    score: float


class OpacityDetector:
    """Loaded once per process; ``detect`` takes display-like uint8 images of any size."""

    def __init__(self, weights: Path, device: str = "cpu", batch_size: int | None = None) -> None:
        self.model, self.metadata = load_detector(weights, device)
        self.device = device
        self.batch_size = batch_size or (4 if device == "cpu" else 32)
        self.sha256: str = self.metadata["sha256"]

    @torch.inference_mode()
    def detect(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[list[Detection]]:
        out: list[list[Detection]] = []
        rows, cols = NET_SIZE
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = [as_tensor(to_net(img)).to(self.device) for img in chunk]
            for img, found in zip(chunk, self.model(batch), strict=True):
                sx, sy = img.shape[1] / cols, img.shape[0] / rows
                boxes = found["boxes"].float().cpu().numpy()
                scores = found["scores"].float().cpu().numpy()
                out.append(
                    [
                        Detection(
                            (
                                float(b[0] * sx),
                                float(b[1] * sy),
                                float(b[2] * sx),
                                float(b[3] * sy),
                            ),
                            float(s),
                        )
                        for b, s in zip(boxes, scores, strict=True)
                    ]
                )
        return out
