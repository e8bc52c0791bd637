"""Does the fetal head gate refuse what is not a fetal head? (issue 28 item 1)

Every ultrasound file of pydicom's test files and pydicom-data (adult echo, kidney, lymph
node, pelvis, empty OB frames...) is relabelled "FETAL HEAD" and run through the production
path (``process_paths``, as ``medseg process`` does); none may report a gestational age, and
each should be flagged or have no head found. With ``--hc18 DIR`` the same gate's flag rate
on real fetal head frames (HC18 layout) is measured too (every ``--stride``-th frame).

    python benchmarks/fetal_head_not_fetal.py [--hc18 ../shared/data/hc18/training_set]
        [--stride 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import pydicom


def ultrasound_files() -> list[Path]:
    """The US image files of pydicom's test files and of pydicom-data (installed, offline)."""
    import data_store  # pydicom-data
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent, Path(data_store.__file__).parent]
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.dcm")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            except Exception:  # pydicom ships deliberately broken files
                continue
            if ds.get("Modality") == "US" and "PixelData" in pydicom.dcmread(path, force=True):
                found.append(path)
    return found


def run_not_fetal(paths: list[Path]) -> list[dict[str, object]]:
    from worker.pipeline.batch import process_paths
    from worker.pipeline.cache import ModelCache

    models = ModelCache("cpu")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.SeriesDescription = "FETAL HEAD"
            copy = Path(tmp) / "in" / path.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(copy)
            (row,), _ = process_paths([copy], Path(tmp) / "out" / path.stem, models)
            copy.unlink()
            rows.append(
                {
                    "file": path.name,
                    "status": row.status,
                    "error": row.error,
                    "ga": "gestational_age_days" in row.measurements,
                    "review": row.review,
                }
            )
    return rows


def run_hc18(folder: Path, stride: int) -> dict[str, object]:
    from pydicom import Dataset

    from worker.models.fetal_head.evaluate import held_out
    from worker.models.fetal_head.fan import MAX_OUTSIDE_FAN, imaged_region, outside_share
    from worker.models.fetal_head.hc18 import load_image, read_index
    from worker.models.fetal_head.predictor import FetalHeadPredictor
    from worker.models.fetal_head.serve import DEFAULT_WEIGHTS

    predictor = FetalHeadPredictor(DEFAULT_WEIGHTS, "cpu")
    everything = read_index(folder)
    held_out_names = {i.image.name for i in held_out(everything, DEFAULT_WEIGHTS)}
    items = everything[::stride]
    codes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for item in items:
        image = load_image(item.image)
        (result,) = predictor.predict([image], (item.pixel_mm, item.pixel_mm))
        review = list(result.review)
        if outside_share(result.mask, imaged_region(image, Dataset())) > MAX_OUTSIDE_FAN:
            review.append("head mask leaves the imaged region")  # as serve.py judges it
        new = [r for r in review if r.startswith(NEW_CHECKS)]
        group = "held_out" if item.image.name in held_out_names else "trained_on"
        counts[f"{group}_frames"] += 1
        counts[f"{group}_flagged"] += bool(review)
        counts[f"{group}_flagged_only_by_new_checks"] += bool(new) and len(new) == len(review)
        codes.update(reason.split(" (")[0] for reason in review)
    return {"frames": len(items), **counts, "reasons": dict(codes)}


#: The checks issue 28 added (cephalic index, skull echo, mask outside the fan).
NEW_CHECKS = ("not a fetal head", "head mask leaves the imaged region")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hc18", type=Path)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    rows = run_not_fetal(ultrasound_files())
    summary: dict[str, object] = {
        "not_fetal": rows,
        "not_fetal_files": len(rows),
        "not_fetal_flagged_or_no_head": sum(r["status"] != "succeeded" for r in rows),
        "not_fetal_with_ga": sum(bool(r["ga"]) for r in rows),
    }
    if args.hc18:
        summary["hc18"] = run_hc18(args.hc18, args.stride)
    text = json.dumps(summary, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
