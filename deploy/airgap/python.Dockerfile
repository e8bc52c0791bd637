# A stand-in for python:3.11-slim-bookworm from Debian packages (deploy/airgap/base-images.sh).
# `python` and `pip` exist once a venv is on PATH, as in the medseg Dockerfile.
ARG DEBIAN_IMAGE=medseg-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
