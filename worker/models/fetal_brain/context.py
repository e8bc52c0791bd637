"""Through-plane context for a per-slice network (a "2.5D" input): each slice goes in with its
``context`` neighbours on either side as further channels, so that the network sees whether
what it is looking at goes on into the next slices (a brain's outline does; a fluid pocket
before the brain begins, or the face cut tangentially, changes from one slice to the next).

Beyond a stack's ends the end slice stands in for its missing neighbours, the same in training
(``synth.py``'s stacks), validation and serving (``predict.py``).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch

Slices = TypeVar("Slices", npt.NDArray[np.uint8], npt.NDArray[np.float32], torch.Tensor)


def neighbour_indices(count: int, context: int) -> npt.NDArray[np.int64]:
    """(count, 2 * context + 1): for slice i, the slices i - context .. i + context, clamped to
    the stack."""
    offsets = np.arange(-context, context + 1)
    out: npt.NDArray[np.int64] = np.clip(np.arange(count)[:, None] + offsets, 0, count - 1)
    return out


def with_context(stack: Slices, context: int) -> Slices:
    """A stack (slices, rows, cols) as (slices, 2 * context + 1, rows, cols), the slice itself
    in the middle channel; ``context`` 0 adds the channel axis alone. Leading axes (a batch
    of stacks, (stacks, slices, rows, cols)) are kept: each slice takes its own stack's
    neighbours."""
    idx = neighbour_indices(stack.shape[-3], context)
    if isinstance(stack, torch.Tensor):
        return stack[..., torch.from_numpy(idx).to(stack.device), :, :]
    return stack[..., idx, :, :]


def widen_first_layer(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A single-channel network's weights for its context-channel twin: every tensor whose
    input channels are 1 where ``target``'s are more is spread over them with the original in
    the middle channel and zeros elsewhere, so the widened network computes exactly what the
    original did until training teaches it to use the neighbours."""
    out = dict(state)
    for name, weight in state.items():
        want = target.get(name)
        if want is None or weight.ndim != 4 or weight.shape == want.shape:
            continue
        if weight.shape[1] != 1 or want.shape[1] % 2 == 0 or want.shape[0] != weight.shape[0]:
            raise ValueError(f"{name}: cannot widen {tuple(weight.shape)} to {tuple(want.shape)}")
        wide = torch.zeros(want.shape, dtype=weight.dtype)
        wide[:, want.shape[1] // 2] = weight[:, 0]
        out[name] = wide
    return out
