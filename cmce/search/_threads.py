"""Thread settings and locks shared by the indexes of :mod:`cmce.search` (package-internal).

* :func:`omp_threads`: the OpenMP thread count of one search or build, set in the
  calling thread only (an OpenMP setting is per thread) and restored afterwards.
* :class:`ReadWriteLock`: many searches or one mutation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search needs faiss: pip install faiss-cpu") from exc

__all__ = ["ReadWriteLock", "omp_threads"]


@contextmanager
def omp_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` OpenMP threads in the calling thread (None: as is).

    The OpenMP thread count is a per-thread setting, so concurrent searches from
    other Python threads are not affected.
    """
    if threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared with other readers while the block runs."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock alone while the block runs (waits for readers to leave)."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
