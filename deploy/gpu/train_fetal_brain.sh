#!/usr/bin/env bash
# Train the fetal brain's 2.0.0 candidates on one GPU in one command (issue 27): the first
# stage (whole 256-pixel slices), the second (brain-centred windows) and the coarse 3D
# localiser, all three at once on stacks synthesised on the GPU from the atlas' label maps,
# then the pairs served together on the real validation stacks. Nothing is downloaded; the
# machine needs Python with torch, numpy, scipy and OpenCV, and pydicom (a wheel in .whl/ is
# installed to /tmp/site when present).
#
#   deploy/gpu/train_fetal_brain.sh OUT
#
# Before (here, not there; .packs/ is git-ignored: carry it, 37 MB):
#   python -m worker.models.fetal_brain.atlas --atlas ../shared/data/fetal-brain-atlas \
#       --out .packs/fetal-brain-atlas.npz
#   python -m worker.models.fetal_brain.train_synth --pack-real \
#       ../shared/data/fetal-brain-real-val --out .packs/fetal-brain-real.npz
#   python -m pip download --no-deps -d .whl "pydicom==$(python -c 'import pydicom as p; print(p.__version__)')"
# (pydicom is pure Python; .whl/ is ignored through .git/info/exclude: carry it too.)
# The second stage's recipe (refine-gpu, from refine_config) draws a fetal face in 60 % of its
# windows since 2026-12-07 (docs/fetal-brain.md); the first stage's does not.
# Optional, real CT anatomy in the synthesis (docs/fetal-brain.md, "midnight"; 8 MB more):
#   python -m worker.models.fetal_brain.train_synth --pack-textures \
#       ~/.cache/medseg/data/lung1_image.nrrd ~/.cache/medseg/data/lung2_image.nrrd \
#       --out .packs/textures.npz
#   EXTRA="--textures .packs/textures.npz --texture-fraction 0.6 --trunk-texture-fraction 0.5"
# Optional, each slice with its neighbours as channels (context.py; no gain on a CPU,
# docs/fetal-brain.md, "a slice's neighbours"): add "--context 1" to EXTRA; score_pairs serves
# such checkpoints with the same neighbours.
#
# OUT receives 8 files (the most a rented machine gives back): first.pt, refine.pt and
# locator.pt with their .json (sha256, history with the real stacks' Dice at every
# validation), train.log (the three logs) and summary.json (sha256 recomputed, exit codes,
# wall clock, and pairs: new and 2.0.0-rc2 stages crossed, without and with the new
# localiser, served on the real validation stacks with rc2's recipe). The whole command ends within SECONDS + about 3 minutes.
#
# Environment: PACKS (.packs), DEVICE (cuda), SECONDS_EACH (300), GRACE (90), THREADS (5 each),
# PYTHON (python3), EXTRA (more train_synth flags for both U-Nets).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: deploy/gpu/train_fetal_brain.sh OUT}
PACKS=${PACKS:-$ROOT/.packs}
DEVICE=${DEVICE:-cuda}
SECONDS_EACH=${SECONDS_EACH:-300}
THREADS=${THREADS:-5}
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-}
GRACE=${GRACE:-90}  # past the budget: building the validators, the last validation, saving
ATLAS=$PACKS/fetal-brain-atlas.npz
REAL=$PACKS/fetal-brain-real.npz

mkdir -p "$OUT" "$OUT.work"
cd "$ROOT" || exit 2
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=$THREADS
started=$(date +%s)
LOOKALIKES="--mimic-fraction 0.5 --placenta-near-fraction 0.5 --planned-fraction 0.75"

# shellcheck disable=SC2086  # flag lists
timeout $((SECONDS_EACH + GRACE)) "$PYTHON" -m worker.models.fetal_brain.train_synth \
    --bank "$ATLAS" --real "$REAL" --recipe gpu --t2-like 0.75 $LOOKALIKES $EXTRA \
    --max-seconds "$SECONDS_EACH" --device "$DEVICE" --out "$OUT.work/first.pt" \
    >"$OUT.work/first.log" 2>&1 &
first=$!
# shellcheck disable=SC2086
timeout $((SECONDS_EACH + GRACE)) "$PYTHON" -m worker.models.fetal_brain.train_synth \
    --bank "$ATLAS" --real "$REAL" --recipe refine-gpu $EXTRA \
    --max-seconds "$SECONDS_EACH" --device "$DEVICE" --out "$OUT.work/refine.pt" \
    >"$OUT.work/refine.log" 2>&1 &
refine=$!
timeout $((SECONDS_EACH + GRACE)) "$PYTHON" -m worker.models.fetal_brain.train_locator \
    --bank "$ATLAS" --real "$REAL" --oversample 2 --stacks-per-step 8 --base 16 \
    --validate-every-s 60 --max-seconds "$SECONDS_EACH" --device "$DEVICE" \
    --out "$OUT.work/locator.pt" >"$OUT.work/locator.log" 2>&1 &
locator=$!
wait "$first"; first_rc=$?
wait "$refine"; refine_rc=$?
wait "$locator"; locator_rc=$?
# The work folder holds every interim checkpoint; the kept ones come back (the U-Nets' best
# by held-out synthetic Dice, the localiser's last).
for name in first refine locator; do
    cp "$OUT.work/$name.pt" "$OUT.work/$name.json" "$OUT/" 2>/dev/null
done

RC2=worker/models/fetal_brain/candidates
pairs_rc=1
LOCATORS=(none)
[ -f "$OUT/locator.pt" ] && LOCATORS+=("$OUT/locator.pt")
if [ -f "$OUT/first.pt" ] && [ -f "$OUT/refine.pt" ]; then
    timeout 300 "$PYTHON" -m worker.models.fetal_brain.score_pairs --real "$REAL" \
        --device "$DEVICE" --first "$OUT/first.pt" "$RC2/fetal_brain_unet.pt" \
        --refine "$OUT/refine.pt" "$RC2/fetal_brain_refine.pt" --locator "${LOCATORS[@]}" \
        --out "$OUT.work/pairs.json" \
        >"$OUT.work/pairs.log" 2>&1
    pairs_rc=$?
fi
cat "$OUT.work"/{first,refine,locator,pairs}.log >"$OUT/train.log" 2>/dev/null
# Only the checkpoints' sha256 decide the summary's own exit code.
"$PYTHON" -m worker.models._nn.run_summary "$OUT" --seconds $(($(date +%s) - started)) \
    --status "first=$first_rc" --status "refine=$refine_rc" --status "locator=$locator_rc" \
    --status "pairs=$pairs_rc"
summary_rc=$?
if [ -f "$OUT.work/pairs.json" ]; then
    "$PYTHON" - "$OUT/summary.json" "$OUT.work/pairs.json" <<'PY'
import json, sys
summary, pairs = (json.load(open(p)) for p in sys.argv[1:])
summary["pairs"] = [
    {k: p[k] for k in ("first", "refine", "locator", "dice_mean", "flagged", "stacks")}
    for p in pairs["pairs"]
]
json.dump(summary, open(sys.argv[1], "w"), indent=2, sort_keys=True)
PY
fi
for log in "$OUT.work"/{first,refine,locator}.log; do
    echo "== $log"; grep -E "validation|saved|Error" "$log" | tail -n 4 | cut -c1-400
done
echo "== $OUT/summary.json"; cat "$OUT/summary.json"
if [ "$first_rc" -ne 0 ] || [ "$refine_rc" -ne 0 ] || [ "$locator_rc" -ne 0 ] \
    || [ "$summary_rc" -ne 0 ]; then
    exit 1
fi
