"""Read one of our SEGs back as masks on the source frames it references.

A SEG frame says which segment it holds and which source frame it lies on: the Segment
Identification and Derivation Image Sequences of its functional groups (per frame, or shared
when all frames have the same): SOP Instance UID and, for a multi-frame source, the frame
number. Frames no segment covers are absent. BINARY frames are 0/1, FRACTIONAL ones
0..MaximumFractionalValue (half of it or more is inside).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom

#: A source frame: (SOP Instance UID, 1-based frame number; 1 for a single-frame image).
FrameKey = tuple[str, int]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SegMasks:
    """The masks of a SEG: ``frames[(sop uid, frame)][segment number]``, and each segment's
    label."""

    frames: dict[FrameKey, dict[int, Mask]]
    labels: dict[int, str]
    shape: tuple[int, int]

    def union(self, key: FrameKey) -> Mask:
        """Every segment on source frame ``key`` joined (empty when none covers it)."""
        found = self.frames.get(key, {})
        joined = np.zeros(self.shape, dtype=bool)
        for mask in found.values():
            joined |= mask
        return joined

    def voxels(self, segment: int | None = None) -> int:
        return int(
            sum(
                int(m.sum())
                for per in self.frames.values()
                for n, m in per.items()
                if segment is None or n == segment
            )
        )


def _source_of(group: pydicom.Dataset) -> FrameKey | None:
    for derivation in group.get("DerivationImageSequence", []):
        for item in derivation.get("SourceImageSequence", []):
            return str(item.ReferencedSOPInstanceUID), int(item.get("ReferencedFrameNumber", 1))
    return None


def read_seg_masks(path: Path) -> SegMasks:
    """The masks of the SEG at ``path``, keyed by the source frame each lies on."""
    seg = pydicom.dcmread(path)
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    fractional = str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL"
    threshold = int(seg.get("MaximumFractionalValue", 255)) / 2 if fractional else 0.5
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    shared = seg.get("SharedFunctionalGroupsSequence", [None])[0]
    frames: dict[FrameKey, dict[int, Mask]] = {}
    for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        key = _source_of(group) or (_source_of(shared) if shared is not None else None)
        if key is None:
            continue
        identified = group if "SegmentIdentificationSequence" in group else shared
        number = int(identified.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        mask = pixels[index] >= threshold
        per = frames.setdefault(key, {})
        per[number] = per[number] | mask if number in per else mask
    return SegMasks(frames, labels, (int(seg.Rows), int(seg.Columns)))


def dice(a: SegMasks, b: SegMasks, segment: int | None = None) -> float | None:
    """Dice of two SEGs of the same series over every source frame either covers (one
    segment, or all joined); None when both are empty."""
    both = inter = 0
    for key in set(a.frames) | set(b.frames):
        if segment is None:
            ma, mb = a.union(key), b.union(key)
        else:
            empty = np.zeros(a.shape, dtype=bool)
            ma = a.frames.get(key, {}).get(segment, empty)
            mb = b.frames.get(key, {}).get(segment, empty)
        if ma.shape != mb.shape:
            raise ValueError(f"SEG frames of different sizes: {ma.shape} and {mb.shape}")
        inter += int((ma & mb).sum())
        both += int(ma.sum()) + int(mb.sum())
    return None if both == 0 else 2.0 * inter / both
