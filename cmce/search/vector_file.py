"""The float16 vector file a :class:`cmce.search.compact.CompactIndex` re-ranks from.

An (N, D) float16 ``.npy`` file of L2-normalised rows: written in chunks,
atomically, by :class:`VectorFileWriter`; memory-mapped read-only by
:func:`open_vector_file`; recognised again by :func:`file_fingerprint` (a fast
check that it is still the file an index was built over).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError
from cmce.search._arrays import positive_int, unit_matrix

__all__ = ["VectorFileWriter", "file_fingerprint", "open_vector_file"]

_FINGERPRINT_BLOCK = 1 << 16
_FINGERPRINT_BLOCKS = 32


class VectorFileWriter:
    """Write an (N, D) float16 ``.npy`` vector file in chunks, atomically.

    Rows go to a temporary file beside ``path`` that is renamed into place by
    :meth:`close` once all ``count`` rows are written; an interrupted write leaves
    no file at ``path``. Each chunk is checked to hold unit rows.

    Args:
        path: the ``.npy`` file to create (replaced if it exists).
        count: N, the number of rows that will be written.
        dim: D.

    Example:
        >>> with VectorFileWriter(tmp / "vectors.npy", count=len(x), dim=x.shape[1]) as out:
        ...     for chunk in np.array_split(x, 4):
        ...         out.write(chunk)
    """

    def __init__(self, path: str | os.PathLike[str], count: int, dim: int) -> None:
        self.path = Path(path)
        self.count = positive_int(count, "count", 1, GalleryError)
        self.dim = positive_int(dim, "dim", 1, GalleryError)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self._tmp = Path(tmp)
        self._array = np.lib.format.open_memmap(
            self._tmp, mode="w+", dtype=np.float16, shape=(self.count, self.dim)
        )
        self._written = 0

    @property
    def written(self) -> int:
        """Rows written so far."""
        return self._written

    def write(self, rows: np.ndarray) -> None:
        """Append (n, D) unit rows (any real dtype; stored as float16).

        Raises:
            GalleryError: wrong shape, rows not unit norm, or more than ``count`` rows.
        """
        if self._array is None:
            raise GalleryError(f"{self.path}: writer is closed")
        x = unit_matrix(rows, self.dim, "vectors", GalleryError)
        end = self._written + x.shape[0]
        if end > self.count:
            raise GalleryError(f"{self.path}: {end} rows written but the file holds {self.count}")
        self._array[self._written : end] = x
        self._written = end

    def close(self) -> Path:
        """Flush and move the file into place.

        Returns:
            the path written.

        Raises:
            GalleryError: fewer rows were written than ``count``.
        """
        if self._array is None:
            return self.path
        if self._written != self.count:
            self.abort()
            raise GalleryError(f"{self.path}: only {self._written} of {self.count} rows were written")
        self._array.flush()
        del self._array
        self._array = None
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; nothing appears at ``path``."""
        self._array = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VectorFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_vector_file(path: str | os.PathLike[str], dim: int | None = None) -> np.ndarray:
    """Memory-map a float16 vector file read-only.

    Args:
        path: a ``.npy`` file of shape (N, D), dtype float16.
        dim: expected D, or None.

    Returns:
        (N, D) read-only float16 memmap.

    Raises:
        GalleryError: missing, unreadable, not float16 (N, D), or of another dimension.
    """
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"no vector file at {path}; expected an (N, D) float16 .npy file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise GalleryError(
            f"{path} is not a readable (N, D) float16 .npy vector file (truncated or corrupt?): {exc}"
        ) from exc
    if not isinstance(arr, np.memmap) or arr.dtype != np.float16 or arr.ndim != 2 or arr.shape[0] == 0:
        raise GalleryError(
            f"{path} must hold a non-empty (N, D) float16 array, got {arr.dtype} {arr.shape}"
        )
    if dim is not None and arr.shape[1] != dim:
        raise GalleryError(f"{path} holds {arr.shape[1]}-d vectors, expected {dim}-d")
    return arr


def file_fingerprint(path: Path) -> str:
    """sha256 of the size and of evenly spaced 64 KiB blocks (first and last included).

    Detects a replaced, truncated or regenerated file in milliseconds; it does not
    detect every bit flip (hashing 2.5 GB at each load would take seconds).
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _FINGERPRINT_BLOCK * _FINGERPRINT_BLOCKS:
            h.update(fh.read())
        else:
            last = size - _FINGERPRINT_BLOCK
            for i in range(_FINGERPRINT_BLOCKS):
                fh.seek(last * i // (_FINGERPRINT_BLOCKS - 1))
                h.update(fh.read(_FINGERPRINT_BLOCK))
    return h.hexdigest()
