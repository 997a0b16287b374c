"""Deprecated import path, kept for one release: use ``cmce.search.compact`` (and its siblings)."""

import warnings

from cmce.search.compact import (  # noqa: F401
    COMPACT_EXACT_BELOW,
    COMPACT_FROM,
    COMPACT_POSTFILTER_FRACTION,
    INDEX_FILE,
    META_FILE,
    CompactIndex,
    choose_index_kind,
)
from cmce.search.compact_build import BuildStats  # noqa: F401
from cmce.search.compact_config import (  # noqa: F401
    COMPACT_FACTORY,
    COMPACT_PROBE_FRACTION,
    COMPACT_QUANTIZER_EF,
    COMPACT_RERANK,
    COMPACT_TRAIN_MAX,
    COMPACT_TRAIN_PER_LIST,
    CompactConfig,
    compact_nlist,
)
from cmce.search.vector_file import VectorFileWriter, open_vector_file  # noqa: F401

__all__ = [
    "COMPACT_EXACT_BELOW",
    "COMPACT_TRAIN_MAX",
    "COMPACT_FACTORY",
    "COMPACT_FROM",
    "COMPACT_POSTFILTER_FRACTION",
    "COMPACT_PROBE_FRACTION",
    "COMPACT_QUANTIZER_EF",
    "COMPACT_RERANK",
    "COMPACT_TRAIN_PER_LIST",
    "INDEX_FILE",
    "META_FILE",
    "BuildStats",
    "CompactConfig",
    "CompactIndex",
    "VectorFileWriter",
    "choose_index_kind",
    "compact_nlist",
    "open_vector_file",
]

warnings.warn("cmce.compact moved to cmce.search.compact; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
