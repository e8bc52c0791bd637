"""Load a series from files: read headers, group, de-duplicate, sort by position, decode,
derive geometry. Headers come first so that a series is routed (or skipped) before any
pixel data is decoded."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

from worker.core.errors import InputError, SkippedError
from worker.core.tags import SeriesTags
from worker.pipeline.demographics import add_missing_type2, empty_invalid_demographics
from worker.pipeline.geometry import (
    FramePlane,
    VolumeGeometry,
    frame_count,
    frame_planes,
    is_enhanced,
    missing_geometry,
    stack_geometry,
    stack_order,
)
from worker.pipeline.native_pixels import native_pixels

if TYPE_CHECKING:
    from worker.ops.dating import Dating

__all__ = ["LoadedSeries", "SeriesHeaders", "VolumeGeometry", "load_series", "read_series"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedSeries:
    datasets: list[Dataset]  # sorted in stack order, pixel data decoded into ``frames``
    frames: npt.NDArray[np.float32]  # (n, rows, columns), modality LUT applied
    tags: SeriesTags
    geometry: VolumeGeometry | None
    #: For one multi-frame image sorted by position: ``frames[i]`` is its frame
    #: ``frame_order[i]`` (0-based). None: frames are in the files' own order.
    frame_order: npt.NDArray[np.intp] | None = None
    #: Why ``geometry`` is None, for a person.
    geometry_note: str = ""
    #: Notes about the input (duplicate copies ignored, ...), added to the result's warnings.
    warnings: list[str] = field(default_factory=list)
    #: The GA by dates a reviewer entered for the study (worker.ops.dating), read from the DB
    #: where the job runs; it wins over the files' Last Menstrual Date. None: none entered.
    entered_ga: Dating | None = None

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    def require_geometry(self) -> VolumeGeometry:
        """The volume's geometry, for models that measure in 3D: a series of one slice is
        skipped (it is fine, just not for such a model); one without positions fails."""
        if self.geometry is None:
            raise InputError(
                "series has no usable volume geometry "
                f"(ImagePositionPatient/ImageOrientationPatient/PixelSpacing): {self.geometry_note}"
            )
        if len(self.geometry.positions) < 2:
            raise SkippedError(
                "this model needs a volume (two or more parallel slices); the series has one slice"
            )
        return self.geometry

    def file_order(self, masks: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``masks`` (stack order, first axis) back in the source image's frame order."""
        if self.frame_order is None:
            return masks
        inverse = np.argsort(self.frame_order)
        reordered: npt.NDArray[Any] = masks[inverse]
        return reordered


def tags_of(ds: Dataset) -> SeriesTags:
    image_type = ds.get("ImageType", "")
    if not isinstance(image_type, str):
        image_type = "\\".join(str(v) for v in image_type)
    return SeriesTags.of(
        modality=str(ds.get("Modality", "")),
        body_part_examined=str(ds.get("BodyPartExamined", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        image_type=image_type,
        sop_class_uid=str(ds.get("SOPClassUID", "")),
    )


def _unreadable(exc: Exception) -> str:
    if isinstance(exc, InvalidDicomError):
        return "not a DICOM file (no DICM prefix and no readable header)"
    return f"unreadable DICOM header: {type(exc).__name__}: {exc}"[:300]


def read_headers(paths: Iterable[Path]) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Group DICOM files by SeriesInstanceUID; return (groups, [(path, reason)] skipped)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # damaged headers raise many types; all mean "skip it"
            skipped.append((path, _unreadable(exc)))
            continue
        series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        if not series_uid:
            skipped.append((path, "no SeriesInstanceUID (0020,000E): not part of any series"))
            continue
        groups[series_uid].append(path)
    return dict(groups), skipped


#: Values larger than this (the pixel data of all but the smallest images) are left in the
#: file when the headers are read, and read from it when first used: decoding a series then
#: reads each file's pixels, where reading every file again parsed its header a second time
#: (with native_pixels, the 300-slice CT's decoding about halved: docs/performance.md).
DEFER_BYTES = 16 * 1024


@dataclass
class SeriesHeaders:
    """One series' headers, one file per SOP instance: every element parsed, the large values
    (pixel data) deferred, read from the file when decoded."""

    paths: list[Path]
    headers: list[Dataset]
    warnings: list[str] = field(default_factory=list)

    @property
    def tags(self) -> SeriesTags:
        return tags_of(self.headers[0])

    @property
    def sop_class_uid(self) -> str:
        return str(self.headers[0].get("SOPClassUID", ""))

    @property
    def is_image(self) -> bool:
        """Every instance has image pixel attributes (Rows/Columns)."""
        return all("Rows" in ds and "Columns" in ds for ds in self.headers)


def _preference(item: tuple[Path, Dataset]) -> tuple[int, int, str]:
    """Which copy of a duplicated instance to keep: uncompressed, then lossless, then name."""
    path, ds = item
    syntax = pydicom.uid.UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    compressed = int(syntax.is_compressed) if syntax.is_transfer_syntax else 1
    lossy = int(str(ds.get("LossyImageCompression", "00")) == "01")
    return (compressed, lossy, path.name)


@contextlib.contextmanager
def _damaged_is_input() -> Iterator[None]:
    """What pydicom raises on a damaged element, when it is first touched, as InputError:
    the data is damaged, retrying cannot help (our own refusals pass through)."""
    try:
        yield
    except (InputError, SkippedError):
        raise
    except Exception as exc:
        raise InputError(f"damaged DICOM data: {type(exc).__name__}: {exc}"[:500]) from exc


def read_series(paths: Sequence[Path]) -> SeriesHeaders:
    """Read one series' headers; copies of one SOP instance (the same image in several
    transfer syntaxes) are kept once. Raises InputError with a reason a person can act on."""
    with _damaged_is_input():
        return _read_series(paths)


def _read_series(paths: Sequence[Path]) -> SeriesHeaders:
    if not paths:
        raise InputError("empty series")
    items: list[tuple[Path, Dataset]] = []
    for path in paths:
        try:
            items.append((path, pydicom.dcmread(path, defer_size=DEFER_BYTES)))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise InputError(f"{path.name}: not readable DICOM ({exc})") from exc
    series = defaultdict(list)
    for path, ds in items:
        series[str(ds.get("SeriesInstanceUID", "") or "").strip()].append(path.name)
    if len(series) != 1:
        shown = "; ".join(
            f"{uid or '(none)'}: {len(names)} file(s)" for uid, names in series.items()
        )
        raise InputError(f"files belong to {len(series)} series ({shown})")
    by_uid: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path, ds in items:
        by_uid[str(ds.get("SOPInstanceUID", "") or path.name)].append((path, ds))
    kept = [min(copies, key=_preference) for copies in by_uid.values()]
    warnings = []
    if len(kept) < len(items):
        warnings.append(
            f"{len(items) - len(kept)} duplicate copies of SOP instances ignored "
            "(the same image in another transfer syntax); uncompressed copies kept"
        )
    return SeriesHeaders(
        paths=[p for p, _ in kept], headers=[ds for _, ds in kept], warnings=warnings
    )


def _to_grey(pixels: npt.NDArray[Any], ds: Dataset) -> npt.NDArray[Any]:
    """Colour (RGB, YBR converted by pydicom, palette) → luminance; greyscale unchanged."""
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    elif int(ds.get("SamplesPerPixel", 1)) == 1:
        return pixels
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey: npt.NDArray[Any] = pixels[..., :3].astype(np.float32) @ weights
    return grey


def _decode(ds: Dataset) -> npt.NDArray[np.float32]:
    try:
        pixels = native_pixels(ds)
        pixels = ds.pixel_array if pixels is None else pixels
    except Exception as exc:  # decoders raise many types on damaged or unsupported data
        raise InputError(f"cannot decode pixel data: {exc}") from exc
    exact = _integral_rescale(pixels, ds)
    if exact is not None:
        pixels = _rescaled(pixels, *exact)
    elif "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        pixels = apply_modality_lut(pixels, ds)
    elif is_enhanced(ds):
        pixels = _enhanced_rescale(pixels, ds)
    return np.asarray(_to_grey(pixels, ds), dtype=np.float32)


#: float32 holds every integer below 2**24 exactly.
_FLOAT32_INTEGERS = 2**24


def _integral_rescale(pixels: npt.NDArray[Any], ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) where the Modality LUT is a rescale that float32 computes exactly,
    as pydicom's ``apply_modality_lut`` would in float64 before our cast: integer pixels of
    at most 16 bits, an integer slope and intercept (CT's 1 and -1024), every product and sum
    an integer below 2**24. Else None: pydicom's float64 path runs. Skipping the float64
    volume: 300 CT slices of 512² rescaled in ~0.2 s, where the float64 path, its cast and
    the concatenation took ~0.8 s (2-core Xeon, 2026-12-06)."""
    if "ModalityLUTSequence" in ds or "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return None
    if pixels.dtype.kind not in "iu" or pixels.dtype.itemsize > 2:
        return None
    try:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    except (TypeError, ValueError):
        return None  # pydicom's path says what is wrong
    if not (slope.is_integer() and intercept.is_integer()):
        return None
    if 2**16 * abs(slope) + abs(intercept) >= _FLOAT32_INTEGERS:
        return None
    return slope, intercept


def _rescaled(pixels: npt.NDArray[Any], slope: float, intercept: float) -> npt.NDArray[Any]:
    """``pixels * slope + intercept`` in float32 (exact where ``_integral_rescale`` allows)."""
    out = pixels.astype(np.float32)
    if slope != 1:
        out *= np.float32(slope)
    if intercept:
        out += np.float32(intercept)
    return out


def _enhanced_rescale(pixels: npt.NDArray[Any], ds: Dataset) -> npt.NDArray[Any]:
    """Enhanced CT/MR keep the rescale in the Pixel Value Transformation functional group."""
    shared = list(ds.get("SharedFunctionalGroupsSequence", []))[:1]
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if not any("PixelValueTransformationSequence" in g for g in [*shared, *per_frame]):
        return pixels
    frames = pixels if frame_count(ds) > 1 else pixels[np.newaxis]
    out = np.empty(frames.shape, dtype=np.float64)
    for k, frame in enumerate(frames):
        groups = [per_frame[k], *shared] if k < len(per_frame) else shared
        slope = _transform(groups, "RescaleSlope", 1.0)
        intercept = _transform(groups, "RescaleIntercept", 0.0)
        out[k] = frame * slope + intercept
    return out if frame_count(ds) > 1 else out[0]


def _transform(groups: Sequence[Dataset], keyword: str, default: float) -> float:
    for group in groups:
        items = group.get("PixelValueTransformationSequence")
        if items and keyword in items[0]:
            return float(items[0].get(keyword))
    return default


def load_series(paths: Sequence[Path]) -> LoadedSeries:
    """Read and decode one series; raises InputError with a reason a person can act on.

    The loader is an input boundary: pydicom decodes lazily, so a damaged element raises
    whatever its converter raises when first touched (fuzzing found NotImplementedError,
    TypeError, ...). All of them mean "this data is damaged", never "retry later".
    """
    return decode_series(read_series(paths))


def decode_series(headers: SeriesHeaders) -> LoadedSeries:
    """Decode the pixel data of a series whose headers were read (and routed)."""
    with _damaged_is_input():
        return _decode_series(headers)


def _decode_all(datasets: Sequence[Dataset]) -> npt.NDArray[np.float32]:
    """Every frame of the datasets, in order, in one array filled slice by slice (a list of
    decoded slices and their concatenation would hold the volume twice)."""
    stacked: npt.NDArray[np.float32] | None = None
    total, start = sum(frame_count(ds) for ds in datasets), 0
    for ds in datasets:
        frames = _decode(ds)
        frames = frames if frames.ndim == 3 else frames[np.newaxis]
        if stacked is None:
            stacked = np.empty((total, *frames.shape[1:]), dtype=np.float32)
        if start + len(frames) > total:
            raise InputError(f"more frames decoded than the headers announce ({total})")
        stacked[start : start + len(frames)] = frames
        start += len(frames)
    if stacked is None or start != total:
        raise InputError(f"{start} frames decoded where the headers announce {total}")
    return stacked


def _planes_of(headers: Sequence[Dataset]) -> tuple[list[FramePlane] | None, str]:
    planes: list[FramePlane] = []
    for ds in headers:
        found = frame_planes(ds)
        if found is None:
            return None, missing_geometry(ds)
        planes.extend(found)
    return planes, ""


def _decode_series(headers: SeriesHeaders) -> LoadedSeries:
    if not headers.is_image:
        raise SkippedError(f"not an image: {_sop_class_name(headers.sop_class_uid)}")
    shapes = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for ds in headers.headers}
    if len(shapes) != 1:
        raise InputError(f"images of the series have different sizes: {sorted(shapes)}")
    multiframe = [ds for ds in headers.headers if frame_count(ds) > 1]
    retired = str(headers.headers[0].get("SOPClassUID", ""))
    if retired in RETIRED_IMAGE_CLASSES:
        raise InputError(
            f"retired SOP class {RETIRED_IMAGE_CLASSES[retired]} ({retired}): a SEG cannot "
            "reference it (highdicom); send it as Ultrasound Image Storage "
            "(1.2.840.10008.5.1.4.1.1.6.1) or Ultrasound Multi-frame Image Storage"
        )
    for ds in multiframe:
        if str(ds.get("SOPClassUID", "")) in SINGLE_FRAME_CLASSES:
            raise InputError(
                f"{frame_count(ds)} frames in a single-frame SOP class "
                f"({_sop_class_name(str(ds.SOPClassUID))}): its frames cannot be referenced "
                "validly (Referenced Frame Number is not allowed for that class); send it as "
                "Ultrasound Multi-frame Image Storage or as single frames"
            )
    if multiframe and len(headers.headers) > 1:
        raise InputError(
            f"the series mixes {len(multiframe)} multi-frame image(s) with other images; "
            "medseg segments one multi-frame image or a set of single-frame images"
        )
    planes, note = _planes_of(headers.headers)
    pairs = list(zip(headers.paths, headers.headers, strict=True))
    frame_order: npt.NDArray[np.intp] | None = None
    if planes is not None and len(planes) > 1:
        order = stack_order(planes)
        planes = [planes[i] for i in order]
        if multiframe:
            frame_order = order
        else:
            pairs = [pairs[i] for i in order]
    elif planes is None:
        pairs.sort(key=lambda item: (_instance_number(item[1]), item[0].name))
    datasets = [header for _, header in pairs]  # their pixel data read from the file when decoded
    empty_invalid_demographics(datasets)  # never fatal: see demographics.py
    add_missing_type2(datasets)  # real modalities omit type 2 attributes; results need them
    stacked = _decode_all(datasets)
    if frame_order is not None:
        stacked = stacked[frame_order]
    geometry = stack_geometry(planes) if planes is not None else None
    if geometry is not None and len(planes or []) > 1:
        locations = geometry.slice_locations
        if len(np.unique(np.round(locations, 3))) != len(locations):
            raise InputError("two slices share a position (duplicate or mixed stacks)")
    warnings = list(headers.warnings)
    if geometry is not None and geometry.tilt_degrees() > TILT_WARNING_DEGREES:
        warnings.append(
            f"gantry tilt {geometry.tilt_degrees():.1f} degrees (slices sheared along the "
            "stack): the SEG is valid and volumes use the true slice spacing, but some readers "
            "(highdicom's volume, dcmqi) cannot build a volume from it"
        )
    return LoadedSeries(
        datasets=datasets,
        frames=stacked,
        tags=tags_of(datasets[0]),
        geometry=geometry,
        frame_order=frame_order,
        geometry_note=note,
        warnings=warnings,
    )


#: Above this angle between the slice normal and the stack's direction a series is gantry
#: tilted (docs/conformance.md): processed, with a warning.
TILT_WARNING_DEGREES = 0.5

#: SOP classes whose images are single frames by definition (Ultrasound Image Storage): a
#: file of such a class with Number of Frames > 1 cannot be referenced frame by frame.
SINGLE_FRAME_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.6.1"})
#: Retired image classes some old scanners still send (pydicom-data's color-pl.dcm): refused.
RETIRED_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
}


def _instance_number(ds: Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _sop_class_name(uid: str) -> str:
    name = pydicom.uid.UID(uid).name
    return name if name and name != uid else f"SOP class {uid or '(none)'}"
