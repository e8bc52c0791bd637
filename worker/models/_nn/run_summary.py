"""``python -m worker.models._nn.run_summary OUT``: what a training run left in OUT, checked and
summed up in ``OUT/summary.json``: every checkpoint's sha256 recomputed and compared with its
metadata, its size, and the numbers a reader looks for first (deploy/gpu/train_all.sh)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from worker.models._nn.checkpoint import metadata_path, sha256_of

#: Metadata entries copied into the summary where a checkpoint has them.
KEYS = ("model", "version", "train_seconds", "tune_hc_mae_mm", "tta", "ensemble", "device",
        "machine", "bf16")  # fmt: skip


def _headline(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: meta[k] for k in KEYS if k in meta}
    if "schedule" in meta:
        out["schedule"] = meta["schedule"].get("why")
    held = meta.get("held_out_at_training")
    if held:
        out["held_out"] = {
            "frames": held["frames"],
            "hc_abs_diff_mm": held["hc_abs_diff_mm"],
            "dice_mean": held["dice"].get("mean"),
            "by_hc_band": held["by_hc_band"],
            "flagged_share": held["gate"]["flagged_share"],
            "members_hc_abs_diff_mm_mean": held.get("members_hc_abs_diff_mm_mean"),
        }
    cv = meta.get("cross_validation")
    if cv:
        keep = ("films", "dice_mean", "dice_min", "sides_ok", "worst_film")
        out["out_of_fold"] = {k: cv["out_of_fold"].get(k) for k in keep}
        qc = cv.get("out_of_fold_qc_passed") or {}
        out["out_of_fold_qc_passed"] = {k: qc.get(k) for k in keep}
        out["fold_dice_mean"] = [f["dice_mean"] for f in cv["folds"]]
        out["fold_images_per_second"] = [f.get("images_per_second") for f in cv["folds"]]
    if "folds" in meta and isinstance(meta["folds"], list):
        fields = ("fold", "best_epoch", "epochs", "tune_hc_mae_mm", "seconds", "images_per_second")
        out["folds"] = [{k: f.get(k) for k in fields} for f in meta["folds"]]
    return out


def summarise(out: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One entry per checkpoint (``*.pt`` with its ``.json``) in ``out``."""
    checkpoints: dict[str, Any] = {}
    for weights in sorted(out.glob("*.pt")):
        meta_file = metadata_path(weights)
        if not meta_file.exists():
            checkpoints[weights.name] = {"error": f"{meta_file.name} missing"}
            continue
        meta = json.loads(meta_file.read_text())
        actual = sha256_of(weights)
        checkpoints[weights.name] = {
            "sha256": actual,
            "sha256_matches_metadata": actual == meta.get("sha256"),
            "bytes": weights.stat().st_size,
            **_headline(meta),
        }
    return {**(extra or {}), "checkpoints": checkpoints}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, help="the whole run's wall clock")
    parser.add_argument(
        "--status", action="append", default=[], help="NAME=EXIT_CODE of each training"
    )
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {"wall_seconds": args.seconds}
    extra["exit_codes"] = dict(s.split("=", 1) for s in args.status)
    summary = summarise(args.out, extra)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    bad = [n for n, c in summary["checkpoints"].items() if not c.get("sha256_matches_metadata")]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
