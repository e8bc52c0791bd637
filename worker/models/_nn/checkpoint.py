"""Checkpoints: weights file + JSON metadata carrying its sha256, verified on every load.

Two architectures: ``unet`` (one U-Net) and ``unet-ensemble`` (``members`` U-Nets of one shape
whose logits are averaged, worker.models._nn.unet.UNetEnsemble), both loaded by ``load``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worker.models._nn.unet import UNet, UNetEnsemble


class CheckpointError(RuntimeError):
    """A checkpoint is missing, altered (sha256 mismatch) or of an unknown architecture."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def metadata_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save(model: nn.Module, config: dict[str, Any], metadata: dict[str, Any], weights: Path) -> str:
    """Write fp16 weights and ``weights.json`` (config + metadata + sha256); returns the sha256."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu").half().contiguous() if v.is_floating_point() else v.cpu()
        for k, v in model.state_dict().items()
    }
    torch.save({"state_dict": state, "config": config}, weights)
    digest = sha256_of(weights)
    meta = {**metadata, "config": config, "weights": weights.name, "sha256": digest}
    metadata_path(weights).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return digest


def read_metadata(weights: Path) -> dict[str, Any]:
    meta_file = metadata_path(weights)
    if not weights.exists() or not meta_file.exists():
        raise CheckpointError(f"checkpoint {weights} or its {meta_file.name} is missing")
    meta: dict[str, Any] = json.loads(meta_file.read_text())
    return meta


def update_metadata(weights: Path, entries: dict[str, Any]) -> dict[str, Any]:
    """Add ``entries`` to a checkpoint's JSON (evaluation results, a fitted gate); the weights,
    and so their sha256, are unchanged. Returns the new metadata."""
    meta = {**read_metadata(weights), **entries}
    metadata_path(weights).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def verified(weights: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """A checkpoint's config, its weights (floating ones as float32) and its metadata, read
    after checking its sha256 against the metadata."""
    meta = read_metadata(weights)
    actual = sha256_of(weights)
    if actual != meta.get("sha256"):
        raise CheckpointError(
            f"{weights}: sha256 {actual} does not match metadata {meta.get('sha256')}"
        )
    payload = torch.load(weights, map_location="cpu", weights_only=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    return payload["config"], state, meta


def load(weights: Path, device: str) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint after checking its sha256 against the metadata."""
    config, state, meta = verified(weights)
    model = build(config, str(weights))
    model.load_state_dict(state)
    model.eval().to(device)
    return model, meta


def build(config: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """The untrained network a checkpoint's ``config`` describes."""
    arch = config.get("arch")
    base, depth = int(config["base"]), int(config["depth"])
    if arch == "unet":
        channels = int(config.get("in_channels", 1))  # > 1: a slice with its neighbours
        return UNet(in_channels=channels, out_channels=1, base=base, depth=depth)
    if arch == "unet-ensemble":
        return UNetEnsemble(int(config["members"]), base=base, depth=depth)
    raise CheckpointError(f"{source}: unknown architecture {arch!r}")
