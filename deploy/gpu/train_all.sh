#!/usr/bin/env bash
# Train the fetal head and the chest film lung-field models on one GPU, in one command, from
# the checkout and its two data packs alone (issue 33): nothing is installed or downloaded;
# the machine needs Python with torch, numpy, scipy and OpenCV.
#
#   deploy/gpu/train_all.sh OUT
#
# Before (here, not there): medseg pack fetal-head --data ../shared/data/hc18/training_set \
#   --out .packs/fetal-head.npz; medseg pack lung-cxr --data ../shared/data/cxr-lungs \
#   --out .packs/lung-cxr.npz (.packs/ is git-ignored: carry it).
#
# Both trainings run at once (the small U-Nets leave the GPU mostly idle; each has its own
# budget and its schedule follows from it: fetal_head/schedule.py, lung_cxr/schedule.py), each
# under `timeout`, so the whole command ends within max(FETAL_SECONDS, CXR_SECONDS) + about a
# minute of loading and scoring. OUT receives 7 files: for each model the checkpoint (.pt) and
# its metadata (.json: sha256, schedule, per-fold and held-out metrics), its log, and
# summary.json (sha256 recomputed, headline numbers, wall clock, exit codes). At most
# FETAL_MEMBERS/CXR_MEMBERS fold models (default 4) join an ensemble: 4 of these U-Nets in
# fp16 are 15.7 MB, under a 16 MiB limit on files brought back from a rented machine.
#
# Environment: PACKS (.packs), DEVICE (cuda), FETAL_SECONDS (330), CXR_SECONDS (270),
# FETAL_MEMBERS (4), CXR_MEMBERS (4), THREADS (CPU threads per training, 8), PYTHON (python3),
# EXTRA (more `medseg train` flags for both, e.g. "--folds 2 --epochs 1" for a smoke test).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: deploy/gpu/train_all.sh OUT}
PACKS=${PACKS:-$ROOT/.packs}
DEVICE=${DEVICE:-cuda}
FETAL_SECONDS=${FETAL_SECONDS:-330}
CXR_SECONDS=${CXR_SECONDS:-270}
FETAL_MEMBERS=${FETAL_MEMBERS:-4}
CXR_MEMBERS=${CXR_MEMBERS:-4}
THREADS=${THREADS:-8}
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-}
GRACE=120  # seconds past its budget before a training is stopped (loading, scoring, saving)

mkdir -p "$OUT"
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=$THREADS
started=$(date +%s)

# shellcheck disable=SC2086  # EXTRA is a list of flags
timeout $((FETAL_SECONDS + GRACE)) "$PYTHON" -m worker.models.fetal_head.train \
    --data "$PACKS/fetal-head.npz" --out "$OUT/fetal_head_unet.pt" --device "$DEVICE" \
    --max-seconds "$FETAL_SECONDS" --max-members "$FETAL_MEMBERS" $EXTRA \
    >"$OUT/fetal_head.log" 2>&1 &
fetal=$!
# shellcheck disable=SC2086
timeout $((CXR_SECONDS + GRACE)) "$PYTHON" -m worker.models.lung_cxr.recipe \
    --data "$PACKS/lung-cxr.npz" --out "$OUT/lung_cxr_unet.pt" --device "$DEVICE" \
    --max-seconds "$CXR_SECONDS" --max-members "$CXR_MEMBERS" $EXTRA \
    >"$OUT/lung_cxr.log" 2>&1 &
cxr=$!
wait "$fetal"; fetal_rc=$?
wait "$cxr"; cxr_rc=$?

"$PYTHON" -m worker.models._nn.run_summary "$OUT" --seconds $(($(date +%s) - started)) \
    --status "fetal-head=$fetal_rc" --status "lung-cxr=$cxr_rc"
summary_rc=$?
for log in "$OUT/fetal_head.log" "$OUT/lung_cxr.log"; do
    echo "== $log"; tail -n 12 "$log"
done
echo "== $OUT/summary.json"; cat "$OUT/summary.json"
if [ "$fetal_rc" -ne 0 ] || [ "$cxr_rc" -ne 0 ] || [ "$summary_rc" -ne 0 ]; then
    exit 1
fi
