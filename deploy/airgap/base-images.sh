#!/bin/sh
# Base images for sites that cannot pull from Docker Hub (air-gapped hospital networks):
# everything is made from Debian packages, fetched from a Debian mirror the site can reach.
#
#   deploy/airgap/base-images.sh            # both images below
#
#   medseg-local/debian:bookworm        debootstrap --variant=minbase bookworm, imported
#   medseg-local/python:3.11-bookworm   + python3 (bookworm's 3.11) and python3-venv: a stand-in
#                                       for python:3.11-slim-bookworm (Dockerfile PYTHON_IMAGE)
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SUITE (bookworm),
# IMAGE_PREFIX (medseg-local), DOCKER (docker). Needs root (debootstrap) and a Docker engine.
# An image that already exists is kept: remove it (docker rmi) to remake it.
set -eu

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
IMAGE_PREFIX=${IMAGE_PREFIX:-medseg-local}
DOCKER=${DOCKER:-docker}
HERE=$(cd "$(dirname "$0")" && pwd)

DEBIAN_IMAGE="$IMAGE_PREFIX/debian:$DEBIAN_SUITE"
PYTHON_IMAGE="$IMAGE_PREFIX/python:3.11-$DEBIAN_SUITE"

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

if have_image "$DEBIAN_IMAGE"; then
    echo "kept $DEBIAN_IMAGE"
else
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/medseg-rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR"
    # What the official debian images do: no package caches, no documentation.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -c . | "$DOCKER" import \
        --change 'CMD ["bash"]' \
        --change 'ENV LANG=C.UTF-8' \
        - "$DEBIAN_IMAGE"
    rm -rf "$rootfs"
    trap - EXIT
    echo "made $DEBIAN_IMAGE"
fi

if have_image "$PYTHON_IMAGE"; then
    echo "kept $PYTHON_IMAGE"
else
    # Any builder: this Dockerfile needs no BuildKit feature.
    "$DOCKER" build \
        --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
        -f "$HERE/python.Dockerfile" -t "$PYTHON_IMAGE" "$HERE"
    echo "made $PYTHON_IMAGE"
fi
