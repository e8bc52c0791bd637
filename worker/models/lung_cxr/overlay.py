"""Draw what the chest radiograph model found on a film, for the docs and for a reviewer:
right field outline blue, left green, opacity boxes red, the gate's verdict underneath.

``python -m worker.models.lung_cxr.overlay FILM.dcm OUT.png [--width 640] [--detector]``
(``--detector``: the phantom-only opacity detector too; the image then says NOT FOR CLINICAL
USE)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from worker.export.outputs import ModelOutput

logger = logging.getLogger(__name__)

_RIGHT, _LEFT, _BOX = (255, 140, 0), (40, 200, 40), (40, 40, 230)  # BGR


def draw(
    image: npt.NDArray[np.uint8], output: ModelOutput, width: int = 640
) -> npt.NDArray[np.uint8]:
    """The display image with the first frame's fields, boxes and verdict, ``width`` wide."""
    scale = width / image.shape[1]
    size = (width, round(image.shape[0] * scale))
    canvas = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    for segment, colour in zip(output.segments, (_RIGHT, _LEFT), strict=False):
        mask = cv2.resize(segment.mask[0].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, 2)
    for finding in output.findings:
        if finding.frame == 0:
            x0, y0, x1, y1 = (round(v * scale) for v in finding.box_px)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), _BOX, 2)
    if output.components:  # a research component ran (the pneumonia detector)
        cv2.rectangle(canvas, (0, 0), (width, 26), (0, 0, 0), -1)
        cv2.putText(
            canvas, "NOT FOR CLINICAL USE: " + ", ".join(
                f"{name} {status}" for name, status in output.components.items()
            ), (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _BOX, 1, cv2.LINE_AA,
        )  # fmt: skip
    verdict = "needs review: " + "; ".join(output.review) if output.review else "gate: accepted"
    band = np.zeros((22 * (1 + len(verdict) // 90), width, 3), dtype=np.uint8)
    for k in range(0, len(verdict), 90):
        cv2.putText(
            band, verdict[k : k + 90], (6, 16 + 22 * (k // 90)), cv2.FONT_HERSHEY_SIMPLEX,
            0.45, (255, 255, 255), 1, cv2.LINE_AA,
        )  # fmt: skip
    return np.concatenate([canvas, band], axis=0)


def main(argv: list[str] | None = None) -> int:
    from worker.models.lung_cxr.preprocess import display_uint8
    from worker.models.lung_cxr.serve import LungCxrModel
    from worker.pipeline.loading import load_series

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("film", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument(
        "--detector", action="store_true", help="run the phantom-only opacity detector too"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    series = load_series([args.film])
    output = LungCxrModel("cpu", detector=args.detector).predict(series)
    mono1 = str(series.datasets[0].get("PhotometricInterpretation", "")) == "MONOCHROME1"
    image = display_uint8(series.frames[0], monochrome1=mono1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), draw(image, output, args.width))
    logger.info("wrote %s; review: %s; quality %s", args.out, output.review, output.extras)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
