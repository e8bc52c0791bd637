"""Segmentation and detection scores: Dice, IoU, AP@0.5, precision/recall at a threshold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Box = tuple[float, float, float, float]


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _match(
    predictions: Sequence[Sequence[tuple[Box, float]]],
    truths: Sequence[Sequence[Box]],
    min_iou: float,
) -> list[tuple[float, bool]]:
    """(score, true positive?) of every prediction, greedy by score within each image."""
    scored: list[tuple[float, bool]] = []
    for preds, gts in zip(predictions, truths, strict=True):
        used = [False] * len(gts)
        for box, score in sorted(preds, key=lambda p: -p[1]):
            best, best_j = 0.0, -1
            for j, gt in enumerate(gts):
                overlap = iou(box, gt)
                if not used[j] and overlap > best:
                    best, best_j = overlap, j
            hit = best >= min_iou
            if hit:
                used[best_j] = True
            scored.append((score, hit))
    return scored


def average_precision(
    predictions: Sequence[Sequence[tuple[Box, float]]],
    truths: Sequence[Sequence[Box]],
    min_iou: float = 0.5,
) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+) at ``min_iou``."""
    n_truth = sum(len(t) for t in truths)
    if n_truth == 0:
        return float("nan")
    scored = sorted(_match(predictions, truths, min_iou), key=lambda s: -s[0])
    hits = np.array([h for _, h in scored], dtype=np.float64)
    tp = np.cumsum(hits)
    fp = np.cumsum(1.0 - hits)
    recall = np.concatenate([[0.0], tp / n_truth, [1.0]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1e-9), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(np.diff(recall))[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def precision_recall(
    predictions: Sequence[Sequence[tuple[Box, float]]],
    truths: Sequence[Sequence[Box]],
    threshold: float,
    min_iou: float = 0.5,
) -> tuple[float, float]:
    kept = [[p for p in preds if p[1] >= threshold] for preds in predictions]
    scored = _match(kept, truths, min_iou)
    tp = sum(1 for _, hit in scored if hit)
    n_truth = sum(len(t) for t in truths)
    precision = tp / len(scored) if scored else 1.0
    recall = tp / n_truth if n_truth else 1.0
    return precision, recall


def boundary_distances(
    a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]
) -> tuple[float, float] | None:
    """(Hausdorff distance, 95th percentile of the symmetric boundary distances) between two
    masks of any number of components, in pixels; None when either is empty."""
    from scipy import ndimage

    if not a.any() or not b.any():
        return None

    def edge(m: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        inner: npt.NDArray[np.bool_] = ndimage.binary_erosion(m, border_value=0)
        return m & ~inner

    ea, eb = edge(a), edge(b)
    to_b = ndimage.distance_transform_edt(~eb)[ea]
    to_a = ndimage.distance_transform_edt(~ea)[eb]
    both = np.concatenate([to_b, to_a])
    return float(both.max()), float(np.percentile(both, 95))
