"""How the quality gates of the lung CT and fetal brain models behave: share of inputs flagged
and the range of each signal, per group of inputs (normal phantoms, real CT, altered inputs).

Lung CT (both models): phantoms as the evaluation makes them (40 slices, 128-192 pixels over
345 mm), the short phantoms the test suite sends, the pyradiomics CTs lung1/lung2 (where
``make test-data`` put them), and altered phantoms: one lung replaced by soft tissue, the chest
wall opened to the room air, the lungs replaced by soft tissue on one slice. Fetal brain (the
U-Net): held-out phantom stacks, Colin27 (adult T1 from Debian's mricron-data, where
installed), and altered stacks: blank, one slice lost; with ``--atlas-bank`` also stacks
synthesised from the atlases the weights were not trained on, and the same stacks cut through
the brain by the field of view.

    python benchmarks/quality_gates.py [--lung N] [--brain N] [--data DIR] [--json OUT]
        [--brain-weights PT] [--atlas-bank atlas.npz]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from worker.models.fetal_brain import gate as brain_gate
from worker.models.fetal_brain.phantoms import FetalBrainStack, make_fetal_brain_stack
from worker.models.fetal_brain.predict import StackSegmenter, stack_spacing
from worker.models.lung_ct.serve import LungCtUNet
from worker.models.lung_ct.train import phantom_case
from worker.models.lung_ct.volume import CtVolume, pyradiomics_case, read_nrrd
from worker.models.lung_ct_threshold import gate as lung_gate
from worker.models.lung_ct_threshold.serve import segment_lungs, split_left_right
from worker.pipeline.loading import VolumeGeometry

Row = dict[str, Any]


def _code(reason: str) -> str:
    return reason.split("(", maxsplit=1)[0].strip()


def _lung_row(group: str, volume: CtVolume, model: str, unet: LungCtUNet) -> Row:
    hu, g = volume.hu.astype(np.float32), volume.geometry
    row: Row = {"group": group, "case": volume.name, "model": model}
    try:
        if model == "threshold":
            left, right = segment_lungs(hu, g)
        else:
            left, right = split_left_right(unet.lungs(hu), g)
    except Exception as exc:  # the model refuses the series: a failed job, not a flag
        return {**row, "error": str(exc)}
    s = lung_gate.signals(left, right, hu, g)
    return {**row, **s.as_dict(), "reasons": lung_gate.reasons(s)}


def _lung_inputs(n: int, data: Path | None) -> Iterator[tuple[str, CtVolume]]:
    for seed in range(2000, 2000 + n):
        yield "phantom", phantom_case(seed)[0]
    for seed in range(n):
        for slices in (4, 12, 24):
            yield (
                "short phantom (test suite)",
                replace(phantom_case(3000 + seed, slices)[0], name=f"short{seed}x{slices}"),
            )
    if data is not None:
        for case in ("lung1", "lung2"):
            path = pyradiomics_case(data, case)
            if path.exists():
                yield "real CT", read_nrrd(path)
    rng = np.random.default_rng(0)
    for seed in range(2100, 2100 + n):
        volume, (left, right) = phantom_case(seed, 24)
        one = volume.hu.copy()
        one[right] = (40 + rng.normal(0, 18, int(right.sum()))).astype(np.int16)
        yield "altered: one lung removed", replace(volume, hu=one, name=f"one-lung{seed}")
        wall = volume.hu.copy()
        rows, cols = wall.shape[1:]
        wall[10:14, rows * 2 // 5 : rows * 3 // 5, : cols // 3] = -1000
        yield "altered: chest wall opened", replace(volume, hu=wall, name=f"open-wall{seed}")
        gap = volume.hu.copy()
        gap[12][(left | right)[12]] = 40
        yield "altered: lungs lost on one slice", replace(volume, hu=gap, name=f"gap{seed}")


def lung_rows(n: int, data: Path | None) -> list[Row]:
    unet = LungCtUNet("cpu")
    rows = []
    for group, volume in _lung_inputs(n, data):
        for model in ("threshold", "unet"):
            rows.append(_lung_row(group, volume, model, unet))
        said = [r.get("reasons", r.get("error")) for r in rows[-2:]]
        print(f"  {volume.name:<16} {said[0]} | {said[1]}", flush=True)
    return rows


def _stack_geometry(stack: FetalBrainStack) -> VolumeGeometry:
    from worker.models.fetal_brain.evaluate import stack_geometry

    return stack_geometry(stack.image, (stack.pixel_mm, stack.pixel_mm, stack.slice_mm))


def _colin27(templates: Path) -> Iterator[tuple[str, str, Any, VolumeGeometry]]:
    path = templates / "ch2.nii.gz"
    if not path.exists():
        print(f"  {path} missing (apt install mricron-data): Colin27 skipped")
        return
    import nibabel as nib

    image = np.asarray(nib.load(path).get_fdata()).transpose(2, 1, 0)[:, ::-1, :]  # type: ignore[attr-defined]
    positions = np.array([[0.0, 0.0, float(k)] for k in range(len(image))])
    g = VolumeGeometry(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), positions, (1.0, 1.0))
    yield "Colin27 (adult T1)", "T1 as is", image, g
    yield "Colin27 (adult T1)", "T1 inverted", image.max() - image, g


def _atlas_stacks(bank_path: Path, n: int) -> Iterator[tuple[str, str, Any, VolumeGeometry]]:
    """Stacks synthesised from the held-out atlases (ages the weights never saw), and the
    same stacks cut through the brain by the field of view."""
    import torch

    from worker.models.fetal_brain.atlas import load_bank
    from worker.models.fetal_brain.evaluate import stack_geometry
    from worker.models.fetal_brain.synth import BrainBank, SynthConfig, synthesise
    from worker.models.fetal_brain.train_synth import VALIDATION_ATLASES

    bank = load_bank(bank_path)
    held_out = BrainBank(bank.select([a for a in VALIDATION_ATLASES if a in bank.names]), "cpu")
    gen = torch.Generator().manual_seed(20_000)
    for i in range(n):
        ids = torch.tensor([i % len(held_out)])
        batch = synthesise(held_out, gen, 1, SynthConfig(slices=(14, 24)), atlas_ids=ids)
        image = (batch.images[0].numpy() * 255).astype(np.uint8)
        brain = batch.brain[0].numpy() >= 0.5
        pixel, spacing = float(batch.pixel_mm[0]), float(batch.slice_mm[0])
        g = stack_geometry(image, (pixel, pixel, spacing))
        yield "atlas-derived (held-out ages)", held_out.names[int(ids[0])][15:19], image, g
        rows = np.nonzero(brain.any(axis=(0, 2)))[0]
        if rows.size:
            cut = image[:, (rows[0] + rows[-1]) // 2 :]
            yield "altered: brain cut by the field of view", str(i), cut, g


def brain_rows(
    n: int, templates: Path, weights: Path | None = None, atlas_bank: Path | None = None
) -> list[Row]:
    from worker.models.fetal_brain.serve import DEFAULT_BRAIN_WEIGHTS

    segmenter = StackSegmenter(weights or DEFAULT_BRAIN_WEIGHTS, "cpu")
    inputs: list[tuple[str, str, Any, VolumeGeometry]] = []
    if atlas_bank is not None:
        inputs.extend(_atlas_stacks(atlas_bank, n))
    for seed in range(800000, 800000 + n):
        stack = make_fetal_brain_stack(seed)
        inputs.append(("phantom", str(seed), stack.image, _stack_geometry(stack)))
    for seed in range(810000, 810000 + max(1, n // 3)):
        stack = make_fetal_brain_stack(seed)
        g = _stack_geometry(stack)
        inputs.append(("altered: blank stack", str(seed), np.full_like(stack.image, 300), g))
        present = np.nonzero(stack.brain.any(axis=(1, 2)))[0]
        lost = stack.image.copy()
        lost[present[len(present) // 2]] = 0
        inputs.append(("altered: one slice lost", str(seed), lost, g))
    inputs.extend(_colin27(templates))
    rows = []
    for group, name, image, g in inputs:
        prediction = segmenter.segment(image, stack_spacing(g))
        s = brain_gate.of_prediction(prediction, g)
        why = brain_gate.reasons(s)
        rows.append({"group": group, "case": name, **(s.as_dict() if s else {}), "reasons": why})
        print(f"  {group:<24} {name:<12} {why}", flush=True)
    return rows


def summarise(rows: list[Row], keys: list[str]) -> str:
    lines = []
    groups = sorted({(r["group"], r.get("model", "")) for r in rows}, key=lambda x: (x[1], x[0]))
    for group, model in groups:
        chosen = [r for r in rows if r["group"] == group and r.get("model", "") == model]
        failed = [r for r in chosen if "error" in r]
        judged = [r for r in chosen if "error" not in r]
        flagged = sum(1 for r in judged if r["reasons"])
        codes = Counter(_code(x) for r in judged for x in r["reasons"])
        head = f"{model + ': ' if model else ''}{group}: {flagged}/{len(judged)} flagged"
        if failed:
            head += f", {len(failed)} refused by the model ({failed[0]['error']})"
        lines.append(head)
        for key in keys:
            values = [r[key] for r in judged if key in r]
            if values:
                lines.append(f"    {key:<22} {min(values):>10.4g} .. {max(values):<10.4g}")
        for code, count in codes.most_common():
            lines.append(f"    {count} x {code}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lung", type=int, default=10, help="phantoms per lung group")
    parser.add_argument("--brain", type=int, default=30, help="normal fetal brain phantoms")
    default_data = os.environ.get("MEDSEG_TEST_DATA_DIR", str(Path.home() / ".cache/medseg/data"))
    parser.add_argument("--data", type=Path, default=Path(default_data))
    parser.add_argument("--templates", type=Path, default=Path("/usr/share/mricron/templates"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--brain-weights", type=Path, help="default: the shipped checkpoint")
    parser.add_argument(
        "--atlas-bank", type=Path, help="label-map pack: adds stacks of the held-out atlases"
    )
    args = parser.parse_args()
    print("lung CT (threshold | U-Net reasons):")
    lungs = lung_rows(args.lung, args.data if args.data.exists() else None)
    print("fetal brain:")
    brains = brain_rows(args.brain, args.templates, args.brain_weights, args.atlas_bank)
    print("\n== lung CT gate", lung_gate.DEFAULT_THRESHOLDS.as_dict())
    print(summarise(lungs, list(lung_gate.Signals.__dataclass_fields__)))
    print("\n== fetal brain gate", brain_gate.DEFAULT_THRESHOLDS.as_dict())
    print(summarise(brains, list(brain_gate.Signals.__dataclass_fields__)))
    if args.json:
        args.json.write_text(json.dumps({"lung_ct": lungs, "fetal_brain": brains}, indent=1))


if __name__ == "__main__":
    main()
