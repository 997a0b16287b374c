"""The user's corrections as data: must-links, cannot-links and names, beside the raw embeddings.

A gallery's corrections live in one Parquet table, ``people/corrections-NNNNNN.parquet``,
listed under the manifest's optional ``"corrections"`` key (a list of ``{"file", "rows",
"bytes"}``, like ``"skipped"``). One row per correction:

====== ========== ========== ==========
kind   a          b          name
====== ========== ========== ==========
must   entry id   entry id   null
cannot entry id   entry id   null
name   entry id   null       the name
====== ========== ========== ==========

Every change writes the whole table anew under the next number (temporary name, rename),
lists it in the manifest (replaced atomically) and only then deletes the previous file,
so a reader sees the old corrections or the new ones, never a mix. Corrections are small
(a pair or a name per user action), so rewriting them whole costs little and leaves no
erased id in an older file.

Names are an overlay, not a rewrite of the shards: naming a group writes one ``name`` row
per entry here, and ``cmce.storage.read.read_gallery`` shows it as the entry's ``label``
(a name overrides the label the shard holds, e.g. a folder name). A rename touches a few
kilobytes instead of rewriting shards of raw embeddings, the source of truth.

The key was added without a format version bump, as ``"skipped"`` was: a cmce that
predates it reads such a gallery exactly as before (shard labels, no links), and its
``write_gallery`` writes a manifest without corrections.

Old galleries with names in their shard labels. For a while ``Gallery.save`` stored each
named entry's name as its shard label too; a name dropped later (a split, "not this person")
then came back from the shard. Every corrections listing written since says
``"shard_labels": "own"`` (the shards hold the entries' own labels only); a listing without it
(``names_in_shard_labels``) is such an old gallery's, and its readers take a shard label
that is one of the corrections' names for a name the old save wrote, not an entry's own label
(``own_labels``: read as no label). The mark stays off while the same shards stay (a listing
written anew for the old folder keeps it off), and a gallery written whole (``write_gallery``,
which ``Gallery.save`` runs after such a load) stores the cleaned labels with the mark. What the
old save overwrote (a folder label under a name) is lost; a genuine label equal to one of the
names reads as none too, while the name itself is shown wherever it stands. An old gallery
whose every correction was dropped lists none, so nothing tells its leftover names apart.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

import numpy as np

from cmce.errors import ContradictionError, CorrectionError, GalleryError, UnknownEntryError
from cmce.storage.manifest import (
    CORRECTIONS,
    CORRECTIONS_DIR,
    _next_number,
    locked,
    read_manifest,
    require_manifest,
    write_manifest,
)
from cmce.storage.records import Corrections
from cmce.storage.shards import _read_columns, _write_parquet, require_pyarrow
from cmce.storage.staging import StoredKeys

__all__ = [
    "CORRECTIONS",
    "CORRECTIONS_DIR",
    "MAX_NAME_LENGTH",
    "SHARD_LABELS",
    "Corrections",
    "add_corrections",
    "check_corrections",
    "corrections_of",
    "corrections_table",
    "names_in_shard_labels",
    "own_labels",
    "read_corrections",
    "remove_corrections",
    "require_version_2",
    "write_corrections",
    "write_corrections_file",
]

MAX_NAME_LENGTH = 200
"""Longest name accepted (characters)."""

Pair = tuple[str, str]


def _examples(valid: Collection[str], limit: int = 5) -> str:
    """A few of ``valid`` for a message: ``"3 entries, e.g. 'a', 'b'"``."""
    shown = sorted(valid)[:limit]
    more = ", ..." if len(valid) > limit else ""
    return f"{len(valid)} entries" + (f", e.g. {', '.join(map(repr, shown))}{more}" if shown else "")


def check_corrections(corrections: Corrections, valid_ids: Collection[str], source: str = "gallery") -> None:
    """Refuse corrections that name unknown entries, bad names, or contradict each other.

    Contradictions are found with a union-find over the must-links: a cannot-linked pair
    whose two entries end in one must-link component (directly, or through a chain of
    must-links) can never be honoured.

    Args:
        corrections: the complete corrections to check (not only the new ones).
        valid_ids: the entry ids the gallery holds.
        source: the gallery, for messages.

    Raises:
        UnknownEntryError: an entry id the gallery does not hold (the message gives the
            count of valid ids and a few of them).
        CorrectionError: a pair of one entry with itself, or an empty or over-long name.
        ContradictionError: a pair both must- and cannot-linked, or a chain of must-links
            between two cannot-linked entries (the message shows the chain).
    """
    valid = valid_ids if isinstance(valid_ids, (set, frozenset)) else set(valid_ids)
    unknown = sorted(corrections.entry_ids() - valid)
    if unknown:
        shown = ", ".join(map(repr, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise UnknownEntryError(f"{source}: no entry {shown}; it holds {_examples(valid)}")
    for kind, pairs in (("must-link", corrections.must_link), ("cannot-link", corrections.cannot_link)):
        same = [a for a, b in pairs.tolist() if a == b]
        if same:
            raise CorrectionError(f"{source}: a {kind} pairs entry {same[0]!r} with itself; "
                                  f"a pair names two different entries")
    for entry, name in corrections.names.items():
        if not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise CorrectionError(f"{source}: name {name!r} for entry {entry!r}: a name is 1 to "
                                  f"{MAX_NAME_LENGTH} characters, not only spaces")
    both = {tuple(p) for p in corrections.must_link.tolist()} & {tuple(p) for p in corrections.cannot_link.tolist()}
    if both:
        a, b = sorted(both)[0]
        raise ContradictionError(f"{source}: entries {a!r} and {b!r} would be both must-linked and cannot-linked; "
                                 f"remove one of the two first")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in corrections.must_link.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    for a, b in corrections.cannot_link.tolist():
        if find(a) == find(b):
            chain = " = ".join(map(repr, _must_link_path(corrections.must_link, a, b)))
            raise ContradictionError(f"{source}: entries {a!r} and {b!r} are cannot-linked, but must-links join "
                                     f"them ({chain}); remove a must-link of that chain or the cannot-link")


def _must_link_path(must_link: np.ndarray, start: str, goal: str) -> list[str]:
    """The shortest chain of must-links from ``start`` to ``goal`` (breadth-first), both included."""
    nbrs: dict[str, list[str]] = {}
    for a, b in must_link.tolist():
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    before = {start: start}
    todo = deque([start])
    while todo:
        x = todo.popleft()
        if x == goal:
            break
        for y in nbrs.get(x, ()):
            if y not in before:
                before[y] = x
                todo.append(y)
    path = [goal]
    while path[-1] != start:
        path.append(before[path[-1]])
    return path[::-1]


def corrections_table(corrections: Corrections):
    """The corrections as the rows of their table (``pyarrow.Table``: kind, a, b, name)."""
    pa, _ = require_pyarrow()
    kind, a, b, name = [], [], [], []
    for label, pairs in (("must", corrections.must_link), ("cannot", corrections.cannot_link)):
        for x, y in pairs.tolist():
            kind.append(label)
            a.append(x)
            b.append(y)
            name.append(None)
    for entry, value in corrections.names.items():
        kind.append("name")
        a.append(entry)
        b.append(None)
        name.append(value)
    return pa.table({"kind": pa.array(kind, pa.string()), "a": pa.array(a, pa.string()),
                     "b": pa.array(b, pa.string()), "name": pa.array(name, pa.string())})


def _from_tables(tables: list) -> Corrections:
    """Corrections from their tables in manifest order (a later name of one entry wins; a null name unnames)."""
    must, cannot, names = [], [], {}
    for table in tables:
        for kind, a, b, name in zip(*(table.column(c).to_pylist() for c in ("kind", "a", "b", "name"))):
            if kind == "must":
                must.append((a, b))
            elif kind == "cannot":
                cannot.append((a, b))
            elif kind == "name":
                if name is None:
                    names.pop(a, None)
                else:
                    names[a] = name
            else:
                raise CorrectionError(f"corrections table: unknown kind {kind!r} (valid: must, cannot, name)")
    return Corrections(must, cannot, names)


def require_version_2(folder: Path) -> None:
    """Refuse what corrections and erasure cannot change: not a gallery, or a version 1 gallery (say what to run).

    Raises:
        GalleryError: the message says which, and for version 1 how to rewrite it as version 2.
    """
    if read_manifest(folder) is None:
        raise GalleryError(f"{folder} is a version 1 gallery; rewrite it as version 2 first: "
                           f"python -m cmce upgrade {folder} --bundle <its bundle>")


def corrections_of(folder: Path, manifest: dict) -> Corrections:
    """The corrections a manifest lists (empty when it lists none).

    Raises:
        GalleryError: a listed corrections file is missing, damaged or of another size.
    """
    return _from_tables([_read_columns(folder, info, ["kind", "a", "b", "name"])
                         for info in manifest.get(CORRECTIONS, [])])


def read_corrections(folder: str | os.PathLike) -> Corrections:
    """A version 2 gallery's corrections (empty when it has none).

    Raises:
        GalleryError: not a gallery, or a damaged corrections file.
    """
    folder = Path(folder)
    return corrections_of(folder, require_manifest(folder))


SHARD_LABELS = "shard_labels"
"""Key of a corrections listing: ``"own"`` when the shards hold no names (see the module docstring)."""


def names_in_shard_labels(manifest: dict) -> bool:
    """Whether the shards' labels may hold names an old ``Gallery.save`` wrote there: the manifest lists
    corrections without the ``"shard_labels": "own"`` mark."""
    return any(info.get(SHARD_LABELS) != "own" for info in manifest.get(CORRECTIONS, []))


def own_labels(labels: Iterable[str | None], corrections: Corrections, manifest: dict) -> list[str | None]:
    """The entries' own labels from their shard labels: for an old gallery (``names_in_shard_labels``), a
    label that is one of the corrections' names was written by the old save and reads as None.

    >>> old = {"corrections": [{"file": "people/corrections-000000.parquet"}]}
    >>> own_labels(["Ada", "Ada_Lovelace", None], Corrections.empty().merged(names={"e1": "Ada"}), old)
    [None, 'Ada_Lovelace', None]
    """
    labels = list(labels)
    if not corrections.names or not names_in_shard_labels(manifest):
        return labels
    written = set(corrections.names.values())
    return [None if label in written else label for label in labels]


def write_corrections_file(folder: Path, manifest: dict, corrections: Corrections) -> list[str]:
    """Write ``corrections`` as the next corrections file and list it in ``manifest`` (not yet saved).

    For writers that change the manifest under the gallery's lock (``write_corrections``,
    ``cmce.storage.forget``): the file is complete on disk before the caller writes the
    manifest. No corrections: no file, and the manifest key is removed.

    Returns:
        The files the manifest listed before (to delete once the manifest is written).
    """
    old = [info["file"] for info in manifest.get(CORRECTIONS, [])]
    own = not names_in_shard_labels(manifest)  # an old gallery's shards stay as they are: so does its mark
    if not len(corrections):
        manifest.pop(CORRECTIONS, None)
        return old
    name = f"{CORRECTIONS_DIR}/corrections-{_next_number(manifest, CORRECTIONS):06d}.parquet"
    (folder / CORRECTIONS_DIR).mkdir(exist_ok=True)
    _write_parquet(corrections_table(corrections), folder / name)
    manifest[CORRECTIONS] = [{"file": name, "rows": len(corrections), "bytes": (folder / name).stat().st_size,
                              **({SHARD_LABELS: "own"} if own else {})}]
    return old


def write_corrections(folder: str | os.PathLike, corrections: Corrections) -> Corrections:
    """Make ``corrections`` the gallery's corrections, checked, atomically.

    Under the gallery's lock: every entry id must be stored and the corrections must not
    contradict each other (``check_corrections``); the table is written, the manifest
    replaced, and only then the previous table deleted. Refused: nothing changes.

    Returns:
        ``corrections``.

    Raises:
        UnknownEntryError, ContradictionError, CorrectionError: see ``check_corrections``.
        GalleryError: not a version 2 gallery.
    """
    return _change(Path(folder), lambda current: corrections)


def add_corrections(folder: str | os.PathLike, *, must_link: Iterable[Pair] = (), cannot_link: Iterable[Pair] = (),
                    names: Mapping[str, str] | None = None) -> Corrections:
    """Add must-links ("merge"), cannot-links ("split", "not this person") and names, atomically.

    Naming entries writes one name per entry (a group is named by naming its entries);
    a name given again replaces the earlier one. Every entry id must exist and the
    result must hold no contradiction; otherwise nothing changes.

    Args:
        folder: a version 2 gallery.
        must_link: pairs of entry ids that are one person.
        cannot_link: pairs of entry ids that are not one person.
        names: entry id -> name.

    Returns:
        The gallery's corrections after the change.

    Raises:
        UnknownEntryError, ContradictionError, CorrectionError: see ``check_corrections``.
        GalleryError: not a version 2 gallery.
    """
    must_link, cannot_link = list(must_link), list(cannot_link)
    return _change(Path(folder), lambda current: current.merged(must_link, cannot_link, names))


def remove_corrections(folder: str | os.PathLike, *, must_link: Iterable[Pair] = (),
                       cannot_link: Iterable[Pair] = (), names: Iterable[str] = ()) -> Corrections:
    """Drop must-links, cannot-links (in either order) and the names of entries, atomically.

    Pairs and names not stored are ignored (undoing a merge before a split, unnaming).

    Returns:
        The gallery's corrections after the change.
    """
    must_link, cannot_link, names = list(must_link), list(cannot_link), list(names)
    return _change(Path(folder), lambda current: current.without(must_link, cannot_link, names))


def _change(folder: Path, change: Callable[[Corrections], Corrections]) -> Corrections:
    """Under the gallery's lock: the stored corrections -> ``change`` -> checked -> stored (if different)."""
    require_version_2(folder)  # a missing folder or a version 1 gallery: refused before taking the lock
    with locked(folder):
        manifest = require_manifest(folder)
        before = corrections_of(folder, manifest)
        after = change(before)
        keys = StoredKeys()
        keys.update(folder, manifest)
        check_corrections(after, keys.ids, str(folder))
        if after == before:
            return after
        old = write_corrections_file(folder, manifest, after)
        write_manifest(folder, manifest)
        for name in old:
            (folder / name).unlink(missing_ok=True)
    return after
