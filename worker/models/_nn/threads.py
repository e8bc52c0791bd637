"""Per-frame post-processing over threads: OpenCV, scipy.ndimage and numpy release the GIL
for most of their work, so scoring hundreds of full-size frames (ellipse fits, masks) takes a
fraction of the wall clock on a machine with many cores (a GPU host), in the same order."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_THREADS = 8


def thread_map(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[function(x) for x in items]``, on up to MAX_THREADS threads."""
    workers = min(MAX_THREADS, os.cpu_count() or 1)
    if workers <= 1:
        return [function(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))
