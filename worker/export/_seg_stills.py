"""One SEG for several single-frame images without a frame of reference (ultrasound stills,
radiographs of one series).

highdicom segments such images one at a time (it has no geometry to order several by). Each
image gets its own one-image SEG from highdicom, built with the same UIDs and segments;
this module joins them into the first: frames ordered by segment, then by image, each frame
keeping its Derivation Image reference to its own source image."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.pixels.utils import pack_bits


def _frames(seg: hd.seg.Segmentation) -> npt.NDArray[np.uint8]:
    pixels = np.asarray(seg.pixel_array, dtype=np.uint8)
    return pixels if int(seg.NumberOfFrames) > 1 else pixels[np.newaxis]


def segment_of(seg: Dataset, item: Dataset) -> int:
    """The segment of the frame whose functional groups are ``item`` (a SEG of one segment
    may keep Segment Identification in the shared groups)."""
    for group in (item, *seg.get("SharedFunctionalGroupsSequence", [])):
        if "SegmentIdentificationSequence" in group:
            return int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    raise ValueError("a SEG frame without Segment Identification")


def join_stills(parts: Sequence[hd.seg.Segmentation]) -> hd.seg.Segmentation:
    """``parts[0]`` holding the frames of every part (one part per source image, in the
    series' order); the parts must share UIDs, segments and encoding."""
    joined = parts[0]
    frames: list[tuple[int, int, Dataset, npt.NDArray[np.uint8]]] = []
    for index, part in enumerate(parts):
        for item, pixels in zip(part.PerFrameFunctionalGroupsSequence, _frames(part), strict=True):
            frames.append((segment_of(part, item), index, item, pixels))
    frames.sort(key=lambda frame: (frame[0], frame[1]))
    joined.PerFrameFunctionalGroupsSequence = [frame[2] for frame in frames]
    joined.NumberOfFrames = len(frames)
    stacked = np.stack([frame[3] for frame in frames])
    if int(joined.BitsAllocated) == 1:
        joined.PixelData = pack_bits(stacked)
    else:
        raw = stacked.astype(np.uint8).tobytes()
        joined.PixelData = raw + b"\0" * (len(raw) % 2)
    joined.SourceImageSequence = [
        copy.deepcopy(item) for part in parts for item in part.get("SourceImageSequence", [])
    ]
    references = joined.ReferencedSeriesSequence[0]
    references.ReferencedInstanceSequence = [
        copy.deepcopy(item)
        for part in parts
        for series in part.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    ]
    return joined
