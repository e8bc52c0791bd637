"""highdicom's look-up of an attribute in an IOD, memoised.

Building a SEG or an SR, highdicom asks of every source image whether its SOP class has pixel
data and whether it is a multi-frame class (``does_iod_have_pixel_data``,
``is_multiframe_image``). Each answer walks the standard's module tables in Python
(``highdicom._standard_utils.is_attribute_in_iod``): 0.3-2 ms a call, nine calls for one
ultrasound frame's SEG and SR (kept, its series took 55 ms instead of 62 on a 2-core Xeon),
300 for a 300-slice CT (docs/performance.md). The answer depends on the attribute, the SOP
class and the excluded path elements only (the tables are the standard's, loaded once), so it
is kept once computed.

highdicom calls the function through its module, so replacing it there serves every caller.
It is a private function: ``install`` replaces it only where its signature is the one this
was written for, and leaves highdicom as it is otherwise; tests compare the two on every SOP
class highdicom knows.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Sequence
from typing import Protocol

from highdicom import _standard_utils

logger = logging.getLogger(__name__)

PARAMETERS = ("attribute", "sop_class_uid", "exclude_path_elements")


class Lookup(Protocol):
    def __call__(
        self, attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None
    ) -> bool: ...


def memoised(lookup: Lookup) -> Lookup:
    """``lookup`` with its answers kept, keyed by its arguments (the excluded path elements
    as a tuple). A SOP class it does not know raises each time, as before."""

    @functools.lru_cache(maxsize=4096)
    def answer(attribute: str, sop_class_uid: str, exclude: tuple[str, ...] | None) -> bool:
        return lookup(attribute, sop_class_uid, None if exclude is None else list(exclude))

    @functools.wraps(lookup)
    def cached(
        attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None
    ) -> bool:
        exclude = None if exclude_path_elements is None else tuple(exclude_path_elements)
        return answer(str(attribute), str(sop_class_uid), exclude)

    cached.cache_info = answer.cache_info  # type: ignore[attr-defined]
    return cached


def install() -> bool:
    """Memoise highdicom's look-up (once); False where highdicom's function is not the one
    this module knows (then nothing changes)."""
    current = getattr(_standard_utils, "is_attribute_in_iod", None)
    if current is None:
        return False
    if hasattr(current, "cache_info"):
        return True
    if tuple(inspect.signature(current).parameters) != PARAMETERS:
        logger.info("highdicom's is_attribute_in_iod changed its signature: not memoised")
        return False
    _standard_utils.is_attribute_in_iod = memoised(current)
    return True
