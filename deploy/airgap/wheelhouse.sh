#!/bin/sh
# A wheelhouse for building the medseg images without PyPI: run it where PyPI (or the site's
# PyPI proxy) is reachable, on x86_64 Linux, then carry DIR to the build host
# (deploy/airgap/build.sh serves it to the image build).
#
#   deploy/airgap/wheelhouse.sh DIR [PYTHON]
#
# PYTHON (default python3) must be the CPython of the image's base, down to the patch release:
# some dependencies depend on it (redis needs async-timeout below 3.11.3). For the Debian
# stand-in (base-images.sh) that is bookworm's /usr/bin/python3 (3.11.2); for
# python:3.11-slim-bookworm the latest 3.11.
#
# DIR gets every wheel that medseg[all] needs under constraints.txt, plus pip, setuptools and
# wheel (the image build upgrades pip and builds the medseg wheel from source). torch comes
# from whatever index pip is configured with: PyPI's is the CUDA build (a few GB with its
# nvidia-* wheels), which also runs on CPU. For smaller CPU worker images put the CPU wheel
# of the pinned torch (https://download.pytorch.org/whl/cpu) into DIR as well.
# Anything published only as a source distribution is built into a wheel here, so the image
# build never compiles.
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 DIR [PYTHON]" >&2
    exit 2
fi
DIR=$1
PYTHON=${2:-python3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "the images run CPython 3.11"'
mkdir -p "$DIR"
# medseg itself is built inside the image; only its dependencies are fetched.
"$PYTHON" -m pip download --dest "$DIR" --constraint "$ROOT/constraints.txt" \
    "${ROOT}[all]" pip "setuptools>=68" wheel
for sdist in "$DIR"/*.tar.gz "$DIR"/*.zip; do
    [ -e "$sdist" ] || continue
    "$PYTHON" -m pip wheel --no-deps --wheel-dir "$DIR" "$sdist"
    rm -f "$sdist"
done
printf '%s files in %s\n' "$(find "$DIR" -maxdepth 1 -type f | wc -l)" "$DIR" >&2
du -sh "$DIR" >&2
