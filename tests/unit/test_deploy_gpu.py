"""deploy/gpu/train_all.sh end to end on the CPU: tiny packs of phantoms, a tiny budget, and
the service's packages made unimportable, as on a GPU machine that holds only the checkout and
its packs. Both checkpoints, their metadata, the logs and summary.json land in OUT, and nothing
else (a rented machine brings back at most 8 files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.absent import absent_source
from tests.support.films import pairs_layout
from worker.cli import main
from worker.models._nn.checkpoint import sha256_of
from worker.models.fetal_head.phantoms import write_hc18_layout

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "gpu" / "train_all.sh"


def test_train_all_trains_both_models_from_their_packs(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_hc18_layout(tmp_path / "hc18", range(300300, 300318))
    pairs_layout(tmp_path / "films", range(900400, 900406), ["a", "a", "b", "b", "c", "c"])
    for name, data in (("fetal-head", "hc18"), ("lung-cxr", "films")):
        args = ["pack", name, "--data", str(tmp_path / data), "--out", str(packs / f"{name}.npz")]
        assert main(args) == 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(absent_source())
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PACKS": str(packs),
        "DEVICE": "cpu",
        "FETAL_SECONDS": "60",
        "CXR_SECONDS": "60",
        "THREADS": "1",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(site),
        "EXTRA": "--folds 2 --ensemble --epochs 1 --steps 1 --batch-size 2 --input-size 32",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "fetal_head.log",
        "fetal_head_unet.json",
        "fetal_head_unet.pt",
        "lung_cxr.log",
        "lung_cxr_unet.json",
        "lung_cxr_unet.pt",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_codes"] == {"fetal-head": "0", "lung-cxr": "0"}
    fetal = summary["checkpoints"]["fetal_head_unet.pt"]
    cxr = summary["checkpoints"]["lung_cxr_unet.pt"]
    for name, entry in (("fetal_head_unet.pt", fetal), ("lung_cxr_unet.pt", cxr)):
        assert entry["sha256_matches_metadata"] and entry["sha256"] == sha256_of(out / name)
    assert fetal["held_out"]["frames"] > 0  # the held-out subjects, scored on the machine
    assert [f["fold"] for f in fetal["folds"]] == [1, 2]
    assert cxr["out_of_fold"]["films"] == 6 and len(cxr["fold_dice_mean"]) == 2
    fetal_meta = json.loads((out / "fetal_head_unet.json").read_text())
    assert fetal_meta["schedule"]["device_kind"] == "cpu"
    assert fetal_meta["split"]["test_subjects"]
    assert "absent here" not in (out / "fetal_head.log").read_text()
