#!/usr/bin/env bash
# End-to-end smoke test of the built images on one Docker host (not part of `make test` or CI:
# those have no Docker engine). Exits non-zero on the first failure and removes what it started.
#
#   deploy/smoke.sh containers   gateway and CPU worker containers (--network host) against the
#                                host's Redis and PostgreSQL: prestart, gateway health, storescu
#                                a synthetic chest CT, the worker writes a SEG and an SR,
#                                dciodvfy checks both, worker health
#   deploy/smoke.sh compose      the compose stack (compose.yaml + compose.airgap.yaml when
#                                MEDSEG_SMOKE_AIRGAP=1): every service healthy, storescu a study
#                                into the gateway, the SEG arrives in Orthanc, dciodvfy checks it
#   deploy/smoke.sh              both
#
# Needs: the images (deploy/airgap/build.sh or docker build), DCMTK (storescu), dicom3tools
# (dciodvfy), curl; `containers` also a Redis and a PostgreSQL reachable from the host with
# createdb/dropdb rights (PGHOST/PGPORT/PGUSER as for psql; trust or PGPASSWORD); `compose`
# Docker Compose (v2 plugin; without it the v1 docker-compose with a translated copy, see
# compose_v1_file) and the host ports compose.yaml publishes on 127.0.0.1 free.
#
# Environment: DOCKER (docker), MEDSEG_IMAGE_PREFIX (medseg), MEDSEG_TAG (latest),
# MEDSEG_SMOKE_PORT (12112, the gateway's DICOM port), MEDSEG_SMOKE_METRICS_PORT (12191),
# MEDSEG_SMOKE_BROKER_URL (redis://127.0.0.1:6379/0; a key prefix of its own per run),
# MEDSEG_SMOKE_AIRGAP (0), MEDSEG_SMOKE_TIMEOUT (seconds per wait, 300).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOCKER=${DOCKER:-docker}
PREFIX=${MEDSEG_IMAGE_PREFIX:-medseg}
TAG=${MEDSEG_TAG:-latest}
GATEWAY_IMAGE="$PREFIX-gateway:$TAG"
WORKER_IMAGE="$PREFIX-worker-cpu:$TAG"
PORT=${MEDSEG_SMOKE_PORT:-12112}
METRICS_PORT=${MEDSEG_SMOKE_METRICS_PORT:-12191}
BROKER_URL=${MEDSEG_SMOKE_BROKER_URL:-redis://127.0.0.1:6379/0}
TIMEOUT=${MEDSEG_SMOKE_TIMEOUT:-300}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
RUN_ID="$(date +%s)$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/medseg-smoke.XXXXXX")
CLEANUP=()

log() { printf '%s smoke: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}
# on_exit COMMAND...: run COMMAND when the script ends (last registered, first run).
on_exit() {
    local quoted
    printf -v quoted '%q ' "$@"
    CLEANUP+=("$quoted")
}
# run_cleanup: run and forget what on_exit registered (between the two modes of `all`: the
# containers mode's gateway listens on the host port that compose then publishes).
run_cleanup() {
    local i started=$SECONDS
    ((${#CLEANUP[@]})) || return 0
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUP[i]}" >/dev/null 2>&1 || true
    done
    CLEANUP=()
    log "cleaned up in $((SECONDS - started)) s"
}
cleanup() {
    run_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || fail "$tool not found (apt-get install dcmtk dicom3tools postgresql-client curl)"
    done
}

# wait_until SECONDS WHAT COMMAND...: run COMMAND every second until it succeeds.
wait_until() {
    local limit=$1 what=$2 started=$SECONDS
    shift 2
    until "$@"; do
        ((SECONDS - started < limit)) || fail "$what: not within $limit s"
        sleep 1
    done
    log "$what after $((SECONDS - started)) s"
}

health_is() { [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null)" = "$2" ]; }

# dciodvfy prints "Error - ..." for every violation of the IOD; warnings are allowed.
dicom_valid() {
    local file=$1 errors
    errors=$(dciodvfy -new "$file" 2>&1 | grep -E '^Error' || true)
    [ -z "$errors" ] || fail "dciodvfy $file:"$'\n'"$errors"
    log "dciodvfy: no errors in $(basename "$file") ($(stat -c %s "$file") bytes)"
}

# A synthetic chest CT (40 slices, exact ground truth) written by the worker image itself.
make_study() {
    [ ! -d "$WORK/send" ] || return 0
    mkdir -p "$WORK/send"
    "$DOCKER" run --rm --user "$(id -u):$(id -g)" -v "$WORK/send:/out" "$WORKER_IMAGE" \
        medseg --log-level WARNING phantoms chest-ct --out /out --count 1 --dicom mono >/dev/null
    log "study: $(find "$WORK/send" -name '*.dcm' | wc -l) instances"
}

send_study() {
    local started=$SECONDS
    TCP_NODELAY=1 storescu -aec MEDSEG +sd +r 127.0.0.1 "$1" "$WORK/send" \
        || fail "storescu to 127.0.0.1:$1"
    log "storescu: sent in $((SECONDS - started)) s"
}

# ------------------------------------------------------------------ gateway + worker containers

jobs_done() {
    # medseg jobs: one row per job under a header; done when every job succeeded.
    local rows
    rows=$("$DOCKER" exec "$1" medseg --log-level WARNING jobs | tail -n +2)
    if grep -qE ' (failed|quarantined|cancelled) ' <<<"$rows"; then
        fail "a job did not succeed:"$'\n'"$rows"
    fi
    [ -n "$rows" ] && ! grep -qvE ' succeeded ' <<<"$rows"
}

smoke_containers() {
    need storescu dciodvfy createdb dropdb
    local db="medseg_smoke_$RUN_ID" volume="medseg-smoke-$RUN_ID"
    local gateway="medseg-smoke-gateway-$RUN_ID" worker="medseg-smoke-worker-$RUN_ID"
    createdb "$db" || fail "createdb $db on $PGHOST:$PGPORT"
    on_exit dropdb --if-exists "$db"
    "$DOCKER" volume create "$volume" >/dev/null
    on_exit "$DOCKER" volume rm -f "$volume"
    local env=(
        -e "MEDSEG_DATABASE_URL=postgresql+psycopg://$PGUSER@$PGHOST:$PGPORT/$db"
        -e "MEDSEG_BROKER_URL=$BROKER_URL"
        -e "MEDSEG_BROKER_KEY_PREFIX=medseg-smoke-$RUN_ID:"
        -e "MEDSEG_PORT=$PORT"
        -e "MEDSEG_METRICS_PORT=$METRICS_PORT"
        -e MEDSEG_SERIES_QUIET_SECONDS=2
        -e MEDSEG_COMPLETION_POLL_SECONDS=0.5
    )
    [ -z "${PGPASSWORD:-}" ] || env+=(-e "PGPASSWORD=$PGPASSWORD")
    # The images' own healthchecks, checked every 5 s instead of every 30/60 s.
    local run=("$DOCKER" run --network host -v "$volume:/var/lib/medseg" "${env[@]}")
    local health=(--health-interval 5s --health-start-period 0s)

    make_study
    local started=$SECONDS
    "${run[@]}" --rm "$GATEWAY_IMAGE" medseg prestart --timeout 60 || fail "medseg prestart"
    log "prestart (wait + migrate) in $((SECONDS - started)) s"

    "${run[@]}" -d --name "$gateway" "${health[@]}" "$GATEWAY_IMAGE" >/dev/null
    on_exit "$DOCKER" rm -f "$gateway"
    wait_until "$TIMEOUT" "gateway healthy" health_is "$gateway" healthy

    started=$SECONDS
    send_study "$PORT"
    # Both queues: the chest CT U-Net is routed to the gpu queue.
    "${run[@]}" -d --name "$worker" "${health[@]}" "$WORKER_IMAGE" \
        medseg worker --queues cpu,gpu --concurrency 1 --name "medseg-cpu@%h" >/dev/null
    on_exit "$DOCKER" rm -f "$worker"
    wait_until "$TIMEOUT" "job succeeded" jobs_done "$gateway"
    log "end to end (storescu start to SEG written, worker start included): $((SECONDS - started)) s"
    "$DOCKER" exec "$gateway" medseg --log-level WARNING jobs >&2

    "$DOCKER" cp "$worker:/var/lib/medseg/results" "$WORK/results"
    local files
    files=$(find "$WORK/results" -name 'seg.dcm' -o -name 'sr.dcm')
    grep -q 'seg.dcm' <<<"$files" || fail "no seg.dcm under results/"
    for file in $files; do dicom_valid "$file"; done
    wait_until "$TIMEOUT" "worker healthy" health_is "$worker" healthy
    log "containers: passed"
}

# ------------------------------------------------------------------------------ compose stack

# Compose v1 (Debian's docker-compose 1.29) rejects two compose-spec features compose.yaml uses:
# the top-level name and env_file entries with required: false. This writes a copy without them
# (an optional env file that exists is kept as a plain entry); the services are unchanged.
compose_v1_file() {
    /usr/bin/env python3 - "$ROOT/deploy/compose.yaml" "$1" <<'EOF'
import sys
from pathlib import Path

import yaml

source, target = Path(sys.argv[1]), Path(sys.argv[2])
data = yaml.safe_load(source.read_text())
data.pop("name", None)
for service in data["services"].values():
    entries = service.pop("env_file", None) or []
    kept = [
        entry if isinstance(entry, str) else entry["path"]
        for entry in entries
        if isinstance(entry, str)
        or entry.get("required", True)
        or (source.parent / entry["path"]).exists()
    ]
    if kept:
        service["env_file"] = kept
target.write_text(yaml.safe_dump(data, sort_keys=False))
EOF
}

COMPOSE_SERVICES="dashboard flower gateway orthanc postgres prestart prometheus redis worker-cpu"

compose_healthy() {
    # Every service there; those with a healthcheck healthy, the rest running; prestart exited 0.
    local id name state health code names=()
    for id in $("$DOCKER" ps -a -q --filter "label=com.docker.compose.project=$PROJECT"); do
        name=$("$DOCKER" inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
        names+=("$name")
        state=$("$DOCKER" inspect -f '{{.State.Status}}' "$id")
        health=$("$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
        if [ "$name" = prestart ]; then
            code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$id")
            [ "$state" = exited ] || return 1
            [ "$code" = 0 ] || fail "prestart exited $code"
            continue
        fi
        [ "$state" = running ] || return 1
        [ -z "$health" ] || [ "$health" = healthy ] || return 1
    done
    [ "$(printf '%s\n' "${names[@]}" | sort | xargs)" = "$COMPOSE_SERVICES" ]
}

orthanc_seg() {
    curl -fsS -X POST http://127.0.0.1:8042/tools/find \
        -d '{"Level": "Instance", "Query": {"Modality": "SEG"}}' \
        | python3 -c 'import json, sys; ids = json.load(sys.stdin); print(ids[0] if ids else "")'
}

orthanc_has_seg() { [ -n "$(orthanc_seg)" ]; }

smoke_compose() {
    need storescu dciodvfy curl
    local files=()
    PROJECT="medseg-smoke-$RUN_ID"
    if "$DOCKER" compose version >/dev/null 2>&1; then
        COMPOSE=("$DOCKER" compose)
        files=(-f "$ROOT/deploy/compose.yaml")
        log "$("$DOCKER" compose version)"
    elif command -v docker-compose >/dev/null; then
        COMPOSE=(docker-compose --project-directory "$ROOT/deploy")
        compose_v1_file "$WORK/compose.v1.yaml"
        files=(-f "$WORK/compose.v1.yaml")
        log "no compose v2 plugin: docker-compose $(docker-compose version --short) on a v1 copy"
    else
        fail "neither docker compose nor docker-compose"
    fi
    [ "${MEDSEG_SMOKE_AIRGAP:-0}" = 0 ] || files+=(-f "$ROOT/deploy/compose.airgap.yaml")

    # The dashboard refuses to start without a password hash; a throwaway one for this run.
    local hash
    hash=$(head -c 24 /dev/urandom | base64 \
        | "$DOCKER" run --rm -i "$PREFIX-dashboard:$TAG" medseg dashboard hash-password)
    hash=${hash//\$/\$\$} # compose interpolates $
    cat >"$WORK/smoke.yaml" <<EOF
services:
  dashboard:
    environment:
      MEDSEG_DASHBOARD_PASSWORD_HASH: "$hash"
      MEDSEG_DASHBOARD_SECRET_KEY: "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
EOF
    files+=(-f "$WORK/smoke.yaml")
    COMPOSE+=(-p "$PROJECT" "${files[@]}")
    export MEDSEG_DICOM_PORT=$PORT
    POSTGRES_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export POSTGRES_PASSWORD

    make_study
    on_exit "${COMPOSE[@]}" down -v --remove-orphans
    "${COMPOSE[@]}" up -d --no-build >&2 || fail "compose up"
    wait_until "$TIMEOUT" "compose stack healthy" compose_healthy
    "${COMPOSE[@]}" ps >&2

    local started=$SECONDS
    send_study "$PORT"
    wait_until "$TIMEOUT" "SEG in Orthanc" orthanc_has_seg
    log "end to end (storescu start to SEG stored in Orthanc): $((SECONDS - started)) s"
    curl -fsS -o "$WORK/orthanc-seg.dcm" "http://127.0.0.1:8042/instances/$(orthanc_seg)/file"
    dicom_valid "$WORK/orthanc-seg.dcm"
    curl -fsS "http://127.0.0.1:9090/api/v1/query?query=up" | grep -q '"job":"medseg-gateway"' \
        || fail "prometheus does not scrape the gateway"
    log "compose: passed"
}

case "${1:-all}" in
    containers) smoke_containers ;;
    compose) smoke_compose ;;
    all)
        smoke_containers
        run_cleanup
        smoke_compose
        ;;
    *)
        echo "usage: $0 [containers|compose|all]" >&2
        exit 2
        ;;
esac
