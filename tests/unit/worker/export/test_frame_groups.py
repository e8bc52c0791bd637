"""The per-frame functional groups encoded by ``frame_groups`` are pydicom's own bytes: the
whole file equal, for BINARY and FRACTIONAL volume SEGs and a still's; anything the encoder
does not write is left to pydicom, and the dataset is as it was after the save."""

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
from worker.export import frame_groups
from worker.export.frame_groups import PER_FRAME, encode_items
from worker.export.seg import build_seg, save_atomic, write_seg
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.models.lung_ct.phantoms import write_chest_series
from worker.models.lung_ct_threshold.serve import SPEC
from worker.pipeline.loading import load_series


def _pydicom(ds: Dataset) -> bytes:
    """The file as pydicom's writer alone makes it."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _saved(ds: Dataset, path: Path) -> bytes:
    """The file as the pipeline saves it (``save_atomic``: the fast path where it applies)."""
    save_atomic(ds, path)
    return path.read_bytes()


def _encoded(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each save took the fast path (its items encoded), in order."""
    taken: list[bool] = []

    def spy(items: list[Dataset]) -> bytes | None:
        encoded = encode_items(items)
        taken.append(encoded is not None)
        return encoded

    monkeypatch.setattr(frame_groups, "encode_items", spy)
    return taken


def _ct_seg(tmp_path: Path, size: int) -> hd.seg.Segmentation:
    series = load_series(write_chest_series(chest_phantom(0, slices=8, size=size), tmp_path))
    return build_seg(series, SPEC.load("cpu").predict(series), SPEC)


@pytest.mark.parametrize("size", [128, 130], ids=["binary", "fractional"])
def test_a_volume_seg_is_written_byte_for_byte_as_pydicom_writes_it(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _encoded(monkeypatch)
    seg = _ct_seg(tmp_path / "in", size)
    assert len(seg.PerFrameFunctionalGroupsSequence) > 8  # both lungs, frame by frame
    assert seg.get_item(0x7FE00010).VR == "OB or OW"  # as built: pydicom resolves it on saving
    element = seg.get_item(PER_FRAME)
    before = seg.original_encoding, seg.original_character_set

    fast = _saved(seg, tmp_path / "seg.dcm")  # first, on the SEG as built
    assert taken == [True]
    assert fast == _pydicom(seg)
    assert seg.get_item(PER_FRAME) is element  # put back
    assert (seg.original_encoding, seg.original_character_set) == before


def test_a_still_seg_is_written_byte_for_byte_and_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _encoded(monkeypatch)
    path = write_us_phantom(tmp_path / "us.dcm", 500007).path
    spec = get_spec("fetal-head-unet")
    series = load_series([path])
    out = tmp_path / "seg.dcm"
    seg = write_seg(series, spec.load("cpu").predict(series), spec, out)  # through save_atomic
    assert taken == [True]
    assert out.read_bytes() == _pydicom(seg)
    assert dciodvfy_errors(out) == []


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
    taken = _encoded(monkeypatch)
    changed = _saved(seg, tmp_path / "seg.dcm")
    assert taken == [False]
    assert changed == _pydicom(seg) != plain
    back = pydicom.dcmread(io.BytesIO(changed))
    assert back.PerFrameFunctionalGroupsSequence[3].FrameContentSequence[0].FrameLabel == (
        "right lung"
    )
