"""The sequences encoded by ``sequence_bytes`` are pydicom's own bytes: the whole file equal,
for BINARY and FRACTIONAL volume SEGs, a still's SEG and the SRs of a volume and a still;
anything the encoder does not write is left to pydicom, and the dataset is as it was after
the save."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.support.factories import chest_phantom
from tests.support.tools import dciodvfy_errors
from worker.core.registry import get_spec
from worker.export import sequence_bytes
from worker.export.seg import build_seg, save_atomic, write_seg
from worker.export.sequence_bytes import encode_items
from worker.export.sr import build_sr, write_sr
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.models.lung_ct.phantoms import write_chest_series
from worker.models.lung_ct_threshold.serve import SPEC
from worker.pipeline.loading import load_series

PER_FRAME = 0x52009230  # Per-Frame Functional Groups Sequence
CONTENT = 0x0040A730  # Content Sequence (SR)


def _pydicom(ds: Dataset) -> bytes:
    """The file as pydicom's writer alone makes it."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _saved(ds: Dataset, path: Path) -> bytes:
    """The file as the pipeline saves it (``save_atomic``: the fast path where it applies)."""
    save_atomic(ds, path)
    return path.read_bytes()


class _Spy:
    """Which sequences the saves encoded (the fast path) and which they left to pydicom."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Dataset], bool]] = []

    def __call__(self, items: list[Dataset]) -> bytes | None:
        encoded = encode_items(items)
        self.calls.append((items, encoded is not None))
        return encoded

    def taken(self, ds: Dataset, tag: int) -> list[bool]:
        """For each save that looked at ``ds``'s sequence ``tag``: whether it was encoded."""
        items = ds.get_item(tag).value
        return [ok for seen, ok in self.calls if seen is items]


def _encoded(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    spy = _Spy()
    monkeypatch.setattr(sequence_bytes, "encode_items", spy)
    return spy


def _ct_seg(tmp_path: Path, size: int) -> hd.seg.Segmentation:
    series = load_series(write_chest_series(chest_phantom(0, slices=8, size=size), tmp_path))
    return build_seg(series, SPEC.load("cpu").predict(series), SPEC)


@pytest.mark.parametrize("size", [128, 130], ids=["binary", "fractional"])
def test_a_volume_seg_is_written_byte_for_byte_as_pydicom_writes_it(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _encoded(monkeypatch)
    seg = _ct_seg(tmp_path / "in", size)
    assert len(seg.PerFrameFunctionalGroupsSequence) > 8  # both lungs, frame by frame
    assert seg.get_item(0x7FE00010).VR == "OB or OW"  # as built: pydicom resolves it on saving
    element = seg.get_item(PER_FRAME)
    before = seg.original_encoding, seg.original_character_set

    fast = _saved(seg, tmp_path / "seg.dcm")  # first, on the SEG as built
    assert spy.taken(seg, PER_FRAME) == [True]
    assert fast == _pydicom(seg)
    assert seg.get_item(PER_FRAME) is element  # put back
    assert (seg.original_encoding, seg.original_character_set) == before


def test_a_still_seg_is_written_byte_for_byte_and_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _encoded(monkeypatch)
    path = write_us_phantom(tmp_path / "us.dcm", 500007).path
    spec = get_spec("fetal-head-unet")
    series = load_series([path])
    out = tmp_path / "seg.dcm"
    output = spec.load("cpu").predict(series)
    seg = write_seg(series, output, spec, out)  # through save_atomic
    assert spy.taken(seg, PER_FRAME) == [True]
    assert out.read_bytes() == _pydicom(seg)
    assert dciodvfy_errors(out) == []

    sr = write_sr(series, output, spec, seg, tmp_path / "sr.dcm")
    assert sr is not None
    assert spy.taken(sr, CONTENT) == [True]
    assert (tmp_path / "sr.dcm").read_bytes() == _pydicom(sr)
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []


def test_a_volume_sr_is_written_byte_for_byte_as_pydicom_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _encoded(monkeypatch)
    series = load_series(write_chest_series(chest_phantom(0, slices=8, size=128), tmp_path / "in"))
    output = SPEC.load("cpu").predict(series)
    seg = build_seg(series, output, SPEC)
    sr = build_sr(series, output, SPEC, seg)
    assert sr is not None
    before = sr.get_item(CONTENT)

    fast = _saved(sr, tmp_path / "sr.dcm")
    assert spy.taken(sr, CONTENT) == [True]
    assert fast == _pydicom(sr)
    assert sr.get_item(CONTENT) is before  # put back
    back = pydicom.dcmread(io.BytesIO(fast))
    assert len(back.ContentSequence) == len(sr.ContentSequence)


def test_what_the_encoder_does_not_write_is_left_to_pydicom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = _ct_seg(tmp_path / "in", 128)
    items = seg.PerFrameFunctionalGroupsSequence
    plain = _pydicom(seg)

    items[3].FrameContentSequence[0].FrameLabel = "Lunge rechts, Schicht ä"  # not ASCII
    assert encode_items(items) is None
    items[3].FrameContentSequence[0].FrameLabel = "right lung"
    assert encode_items(items) is not None
    items[3].FrameContentSequence[0].ContentCreatorName = "Doe^Jane"  # PN: pydicom's
    assert encode_items(items) is None
    spy = _encoded(monkeypatch)
    changed = _saved(seg, tmp_path / "seg.dcm")
    assert spy.taken(seg, PER_FRAME) == [False]
    assert any(ok for _, ok in spy.calls)  # the SEG's other sequences still encoded
    assert changed == _pydicom(seg) != plain
    back = pydicom.dcmread(io.BytesIO(changed))
    assert back.PerFrameFunctionalGroupsSequence[3].FrameContentSequence[0].FrameLabel == (
        "right lung"
    )
