"""Evaluate fetal brain extraction per stack: U-Net (+ clean-up) and the classical baseline."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.core.commands import Evaluation, Progress
from worker.models.fetal_brain import gate
from worker.models.fetal_brain.baseline import baseline_mask
from worker.models.fetal_brain.data import metrics
from worker.models.fetal_brain.predict import Mask, StackSegmenter, stack_spacing
from worker.models.fetal_brain.serve import DEFAULT_BRAIN_WEIGHTS
from worker.pipeline.geometry import VolumeGeometry

logger = logging.getLogger(__name__)


def evaluate_stacks(
    stacks: Iterable[tuple[str, npt.NDArray[Any], Mask, tuple[float, float, float]]],
    weights: Path = DEFAULT_BRAIN_WEIGHTS,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    segmenter = StackSegmenter(weights, device)
    rows: list[dict[str, Any]] = []
    items = list(stacks)
    for i, (name, image, truth, spacing) in enumerate(items):
        voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
        geometry = stack_geometry(image, spacing)
        prediction = segmenter.segment(image, stack_spacing(geometry))
        unet = prediction.mask
        base = baseline_mask(np.asarray(image, dtype=np.float32))
        truth_ml = float(truth.sum() * voxel_ml)
        review = gate.reasons(gate.of_prediction(prediction, geometry))
        rows.append(
            {
                "name": name,
                "unet": metrics(unet, truth),
                "baseline": metrics(base, truth),
                "volume_ml": truth_ml,
                "unet_volume_ml": float(unet.sum() * voxel_ml),
                "unet_volume_error_pct": 100 * (float(unet.sum() * voxel_ml) - truth_ml) / truth_ml,
                "gate": "needs_review" if review else "accepted",
                "gate_reasons": review,
            }
        )
        if progress:
            progress(i + 1, len(items))
    summary: dict[str, Any] = {"stacks": len(rows), "per_stack": rows}
    for method in ("unet", "baseline"):
        for key in ("dice", "iou", "sensitivity", "specificity"):
            values = np.array([r[method][key] for r in rows])
            summary[f"{method}_{key}"] = [
                round(float(values.mean()), 4),
                round(float(values.std()), 4),
            ]
    errors = np.abs([r["unet_volume_error_pct"] for r in rows])
    summary["unet_volume_abs_error_pct"] = [
        round(float(errors.mean()), 2),
        round(float(errors.std()), 2),
    ]
    summary["gate_flagged"] = sum(r["gate"] != "accepted" for r in rows)
    return summary


def stack_geometry(image: npt.NDArray[Any], spacing: tuple[float, float, float]) -> VolumeGeometry:
    """An axis-aligned geometry for a stack of (slices, rows, cols) with its spacing (row mm,
    column mm, slice mm): what the gate needs of a NIfTI stack."""
    positions = np.zeros((image.shape[0], 3))
    positions[:, 2] = np.arange(image.shape[0]) * spacing[2]
    return VolumeGeometry(
        row_cosine=np.array([1.0, 0.0, 0.0]),
        column_cosine=np.array([0.0, 1.0, 0.0]),
        positions=positions,
        pixel_spacing=(spacing[0], spacing[1]),
    )


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"{'stack':<22}{'Dice':>7}{'manual mL':>11}{'U-Net mL':>10}{'error':>8}  gate",
        *(
            f"{r['name']:<22}{r['unet']['dice']:>7.4f}{r['volume_ml']:>11.1f}"
            f"{r['unet_volume_ml']:>10.1f}{r['unet_volume_error_pct']:>+7.1f}%  {r['gate']}"
            + (f" ({'; '.join(r['gate_reasons'])})" if r["gate_reasons"] else "")
            for r in summary["per_stack"]
        ),
        "",
        f"stacks {summary['stacks']}, flagged by the gate {summary['gate_flagged']}",
        f"{'':14}{'U-Net':>18}{'baseline':>18}",
    ]
    for key in ("dice", "iou", "sensitivity", "specificity"):
        u, b = summary[f"unet_{key}"], summary[f"baseline_{key}"]
        lines.append(f"{key:<14}{u[0]:>10.4f} ± {u[1]:.4f}{b[0]:>10.4f} ± {b[1]:.4f}")
    v = summary["unet_volume_abs_error_pct"]
    lines.append(f"U-Net brain volume abs error {v[0]:.2f} ± {v[1]:.2f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path)
    source.add_argument("--phantoms", help="seed range START:STOP")
    parser.add_argument("--weights", type=Path, default=DEFAULT_BRAIN_WEIGHTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.phantoms:
        from worker.models._nn.checkpoint import read_metadata
        from worker.models.fetal_brain.convention import PARENCHYMA, UNSTATED, of_checkpoint
        from worker.models.fetal_brain.phantoms import make_fetal_brain_stack

        # The phantom's truth in the outline the weights state (unstated: the parenchyma).
        stated = of_checkpoint(read_metadata(args.weights))
        convention = stated if stated != UNSTATED else PARENCHYMA
        start, stop = (int(v) for v in args.phantoms.split(":"))
        stacks = (
            (f"seed{s}", st.image, st.truth(convention), (st.pixel_mm, st.pixel_mm, st.slice_mm))
            for s in range(start, stop)
            for st in [make_fetal_brain_stack(s)]
        )
    else:
        from worker.models.fetal_brain.data import nifti_pairs

        stacks = nifti_pairs(args.data)  # type: ignore[assignment]
    summary = evaluate_stacks(stacks, args.weights, args.device)
    logger.info("\n%s", format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def command(args: argparse.Namespace, progress: Progress) -> Evaluation:
    """``medseg evaluate fetal-brain``: NAME_image/NAME_mask NIfTI pairs in ``args.data``."""
    from worker.models.fetal_brain.data import nifti_pairs

    summary = evaluate_stacks(
        nifti_pairs(args.data),
        args.weights or DEFAULT_BRAIN_WEIGHTS,
        args.device,
        progress=lambda i, n: progress("evaluate", i, n),
    )
    return Evaluation(summary, format_summary(summary))


if __name__ == "__main__":
    raise SystemExit(main())
