#!/bin/sh
# Builds the medseg images on a host without Docker Hub or PyPI (air-gapped sites):
#
#   deploy/airgap/base-images.sh                  # once: local Debian and Python base images
#   deploy/airgap/build.sh WHEELHOUSE [TARGET...]
#
# WHEELHOUSE is a directory made by deploy/airgap/wheelhouse.sh; it is served over HTTP on the
# Docker bridge while the images build (pip: --no-index --find-links), then the server stops.
# TARGETs: gateway worker-cpu worker-gpu dashboard (tagged ${MEDSEG_IMAGE_PREFIX:-medseg}-TARGET:
# ${MEDSEG_TAG:-latest}, the names compose.yaml uses) and services (the stand-ins for compose's
# third-party images, medseg-local/{redis,postgres,prometheus,orthanc}:bookworm, for
# deploy/compose.airgap.yaml); default: all of them. Build time per image goes to stderr.
#
# Environment: DOCKER (docker; its client must do BuildKit: Docker 20.10, or buildx with newer
# clients), PYTHON_IMAGE and DEBIAN_IMAGE (the base-images.sh names), MIRROR_HOST (the bridge's
# address, 172.17.0.1) and MIRROR_PORT (12080) for the wheelhouse server. Sites with a PyPI
# proxy instead of a wheelhouse pass --build-arg PIP_INDEX_URL=... to docker build directly.
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 WHEELHOUSE [gateway|worker-cpu|worker-gpu|dashboard|services ...]" >&2
    exit 2
fi
WHEELHOUSE=$(cd "$1" && pwd)
shift
[ $# -gt 0 ] || set -- gateway worker-cpu worker-gpu dashboard services

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOCKER=${DOCKER:-docker}
PYTHON_IMAGE=${PYTHON_IMAGE:-medseg-local/python:3.11-bookworm}
DEBIAN_IMAGE=${DEBIAN_IMAGE:-medseg-local/debian:bookworm}
PREFIX=${MEDSEG_IMAGE_PREFIX:-medseg}
TAG=${MEDSEG_TAG:-latest}
MIRROR_HOST=${MIRROR_HOST:-172.17.0.1}
MIRROR_PORT=${MIRROR_PORT:-12080}
export DOCKER_BUILDKIT=1

# The Dockerfile's ignore file (deploy/Dockerfile.dockerignore) needs BuildKit: built into the
# 20.10 client; clients from 23.0 on need the buildx plugin, and without it refuse to build.
if ! "$DOCKER" buildx version >/dev/null 2>&1; then
    client=$("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null || true)
    case $client in
        19.03.* | 20.10.*) ;;
        *)
            echo "$DOCKER (client ${client:-unknown}) has no buildx plugin: install it, or set" \
                "DOCKER to a 20.10 client (Debian 12's docker.io: DOCKER=/usr/bin/docker)" >&2
            exit 1
            ;;
    esac
fi

ls "$WHEELHOUSE"/torch-*.whl >/dev/null 2>&1 || {
    echo "$WHEELHOUSE holds no torch wheel: make it with deploy/airgap/wheelhouse.sh" >&2
    exit 1
}

python3 -m http.server --bind "$MIRROR_HOST" "$MIRROR_PORT" --directory "$WHEELHOUSE" \
    >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT INT TERM
i=0
until python3 -c "import urllib.request as u; u.urlopen('http://$MIRROR_HOST:$MIRROR_PORT/', timeout=1)" \
    2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge 50 ] || ! kill -0 "$server" 2>/dev/null; then
        echo "the wheelhouse server on $MIRROR_HOST:$MIRROR_PORT did not start" >&2
        exit 1
    fi
    sleep 0.2
done

timed() {
    started=$(date +%s)
    "$@"
    echo "built $image in $(($(date +%s) - started)) s" >&2
}

for target in "$@"; do
    case $target in
        gateway | worker-cpu | worker-gpu | dashboard)
            image="$PREFIX-$target:$TAG"
            # torch from the wheelhouse (TORCH_INDEX_URL empty): the CPU worker gets the CPU
            # wheel if the wheelhouse holds one, else the CUDA build.
            timed "$DOCKER" build -f "$ROOT/deploy/Dockerfile" --target "$target" -t "$image" \
                --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
                --build-arg PIP_NO_INDEX=1 \
                --build-arg "PIP_TRUSTED_HOST=$MIRROR_HOST" \
                --build-arg "PIP_FIND_LINKS=http://$MIRROR_HOST:$MIRROR_PORT/" \
                --build-arg TORCH_INDEX_URL= \
                "$ROOT"
            ;;
        services)
            for service in redis postgres prometheus orthanc; do
                image="medseg-local/$service:bookworm"
                timed "$DOCKER" build -f "$ROOT/deploy/airgap/services.Dockerfile" \
                    --target "$service" -t "$image" \
                    --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
                    "$ROOT/deploy/airgap"
            done
            ;;
        *)
            echo "unknown target: $target" >&2
            exit 2
            ;;
    esac
done
