"""highdicom's IOD look-up, memoised (worker/export/iod_cache.py): the same answers as
highdicom's own function on every SOP class it knows, kept once computed."""

from __future__ import annotations

import pytest
from highdicom import _standard_utils

import worker.export.seg  # noqa: F401 - installs the memoised look-up
from worker.export import iod_cache


def _original() -> iod_cache.Lookup:
    current = _standard_utils.is_attribute_in_iod
    original: iod_cache.Lookup = getattr(current, "__wrapped__", current)
    return original


def test_importing_seg_or_sr_installs_it_once() -> None:
    installed = _standard_utils.is_attribute_in_iod
    assert hasattr(installed, "cache_info")
    assert iod_cache.install() is True
    assert _standard_utils.is_attribute_in_iod is installed  # not wrapped twice


def _outcome(
    lookup: iod_cache.Lookup, attribute: str, uid: str, exclude: list[str] | None
) -> object:
    """The answer, or the exception's type (highdicom knows some classes but not their IOD)."""
    try:
        return lookup(attribute, uid, exclude)
    except KeyError as exc:
        return type(exc)


def test_every_sop_class_gets_highdicom_s_answer() -> None:
    original = _original()
    cached = iod_cache.memoised(original)
    uids = sorted(_standard_utils.get_sop_class_iod_map())
    assert len(uids) > 100
    answered = 0
    for uid in uids:
        for attribute, exclude in (
            ("PixelData", ["IconImageSequence"]),
            ("NumberOfFrames", None),
            ("FloatPixelData", ["IconImageSequence"]),
        ):
            expected = _outcome(original, attribute, uid, exclude)
            assert _outcome(cached, attribute, uid, exclude) is expected, (attribute, uid)
            assert _outcome(cached, attribute, uid, exclude) is expected  # from the cache
            answered += isinstance(expected, bool)
    info = cached.cache_info()  # type: ignore[attr-defined]
    refused = 3 * len(uids) - answered  # an exception is not kept: asked again each time
    assert answered > 300 and (info.hits, info.misses) == (answered, answered + 2 * refused)


def test_the_public_helpers_answer_as_before() -> None:
    # US Image, CT Image, Segmentation, Comprehensive 3D SR
    for uid, pixels, multiframe in (
        ("1.2.840.10008.5.1.4.1.1.6.1", True, False),
        ("1.2.840.10008.5.1.4.1.1.2", True, False),
        ("1.2.840.10008.5.1.4.1.1.66.4", True, True),
        ("1.2.840.10008.5.1.4.1.1.88.34", False, False),
    ):
        assert _standard_utils.does_iod_have_pixel_data(uid) is pixels
        dataset = type("Image", (), {"SOPClassUID": uid})()
        assert _standard_utils.is_multiframe_image(dataset) is multiframe


def test_an_unknown_sop_class_still_raises() -> None:
    cached = iod_cache.memoised(_original())
    for _ in range(2):
        with pytest.raises(KeyError, match=r"1\.2\.3\.4"):
            cached("PixelData", "1.2.3.4")


def test_a_function_of_another_signature_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def changed(keyword: str, uid: str) -> bool:
        return True

    monkeypatch.setattr(_standard_utils, "is_attribute_in_iod", changed)
    assert iod_cache.install() is False
    assert _standard_utils.is_attribute_in_iod is changed
