"""A small keyed cache for loaded models.

ComfyUI re-runs a loader node whenever any of its inputs changes and drops its cached output when
the graph changes, so without this a new prompt could reload the same weights. Keys name the file
by (real path, mtime, size): replacing a file on disk loads the new one.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


def file_stamp(path: str) -> tuple[str, int, int]:
    """(real path, mtime in ns, size): changes whenever the file is replaced or rewritten."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st.st_mtime_ns, st.st_size


class ModelCache:
    """Least-recently-used map key -> model; holds at most `max_entries` models."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, object] = OrderedDict()

    def get_or_load(self, key: Hashable, load: Callable[[], T]) -> T:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]  # type: ignore[return-value]
        value = load()
        self._entries[key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# One cache per model kind, so many text classifiers cannot push out the big image models.
CLASSIFIERS = ModelCache(max_entries=3)
MAES = ModelCache(max_entries=2)
TEXT_CLASSIFIERS = ModelCache(max_entries=3)


def clear_all() -> None:
    """Forget every cached model (tests; frees memory once nothing else holds them)."""
    for cache in (CLASSIFIERS, MAES, TEXT_CLASSIFIERS):
        cache.clear()
