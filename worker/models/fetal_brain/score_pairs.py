"""Score first- and second-stage checkpoints served together, on real stacks (a
``train_synth --pack-real`` pack), the way ``medseg evaluate fetal-brain`` serves them: each
pair under one post-processing recipe (2.0.0-rc2's by default), Dice, volume error and the
gate's verdict per stack, into one JSON. Runs where training runs (a bare GPU machine needs
pydicom beside torch, numpy, scipy and OpenCV).

    python -m worker.models.fetal_brain.score_pairs --real real.npz --first a.pt b.pt \\
        --refine c.pt d.pt [--locator none e.pt] --out pairs.json

A first stage written ``a.pt+b.pt+c.pt`` is an ensemble: ``a.pt`` with ``b.pt`` and ``c.pt``
as its members (``PostProcess.members``, their probabilities averaged).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from itertools import product
from pathlib import Path
from typing import Any

from worker.models._nn.checkpoint import metadata_path, read_metadata, update_metadata
from worker.models.fetal_brain.train_synth import load_real

logger = logging.getLogger(__name__)

CANDIDATE = Path(__file__).resolve().parent / "candidates" / "fetal_brain_unet.pt"


def ensemble(first: Path) -> list[Path]:
    """``a.pt+b.pt`` as [a.pt, b.pt]: a first stage and its members."""
    return [Path(part) for part in str(first).split("+")]


def served_pair(
    first: Path, refine: Path, recipe: dict[str, Any], folder: Path, locator: Path | None = None
) -> Path:
    """Copies of ``first`` (and its members, ``a.pt+b.pt``), ``refine`` (and ``locator``) in
    ``folder``, the first's metadata naming the others and the recipe (the weights, and so
    their sha256, unchanged)."""
    folder.mkdir(parents=True, exist_ok=True)
    head, *others = ensemble(first)
    members = [f"member{k}.pt" for k in range(1, len(others) + 1)]
    parts = [(head, "first.pt"), (refine, "refine.pt"), *zip(others, members, strict=True)]
    if locator is not None:
        parts.append((locator, "locator.pt"))
    for source, name in parts:
        shutil.copyfile(source, folder / name)
        shutil.copyfile(metadata_path(source), metadata_path(folder / name))
    served = {**recipe, "refine": "refine.pt", "locator": None, "members": members}
    if locator is not None:
        served["locator"] = "locator.pt"
    update_metadata(folder / "first.pt", {"postprocess": served})
    return folder / "first.pt"


def score(
    real: Path,
    firsts: list[Path],
    refines: list[Path],
    recipe: dict[str, Any],
    *,
    device: str = "cpu",
    locators: list[Path | None] | None = None,
) -> list[dict[str, Any]]:
    """Every first stage with every second stage (and each localiser, None for none)."""
    from worker.models.fetal_brain.evaluate import evaluate_stacks

    stacks = [(n, i, m, (sp[0], sp[1], sp[2])) for n, i, m, sp in load_real(real)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        combos = product(firsts, refines, locators or [None])
        for k, (first, refine, locator) in enumerate(combos):
            weights = served_pair(first, refine, recipe, Path(tmp) / str(k), locator)
            summary = evaluate_stacks(stacks, weights, device)
            rows.append(
                {
                    "first": str(first),
                    "refine": str(refine),
                    "locator": None if locator is None else str(locator),
                    "dice_mean": summary["unet_dice"][0],
                    "flagged": summary["gate_flagged"],
                    "stacks": {
                        r["name"]: {
                            "dice": round(r["unet"]["dice"], 4),
                            "volume_error_pct": round(r["unet_volume_error_pct"], 1),
                            "gate": r["gate_reasons"] or "accepted",
                        }
                        for r in summary["per_stack"]
                    },
                }
            )
            logger.info("%s", json.dumps(rows[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--first", type=Path, nargs="+", required=True)
    parser.add_argument("--refine", type=Path, nargs="+", required=True)
    parser.add_argument("--recipe-from", type=Path, default=CANDIDATE,
                        help="a checkpoint whose post-processing recipe to serve with")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--locator", nargs="+", default=[], help="3D localisers; 'none' serves without one"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    recipe = dict(read_metadata(args.recipe_from)["postprocess"])
    locators = [None if x == "none" else Path(x) for x in args.locator] or [None]
    rows = score(args.real, args.first, args.refine, recipe, device=args.device, locators=locators)
    args.out.write_text(json.dumps({"recipe": recipe, "pairs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
