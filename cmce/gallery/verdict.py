"""The verdict of one query: which columns were right, or on whom they agree.

A search answers in several views (columns): the CMCE ensemble, each gallery model through
its transformer, and the query model alone. ``query_verdict`` reduces a ``QueryResult`` to
one immutable ``QueryVerdict``, so that nobody has to compare the columns by eye:

* with a known identity (an example, a ``Name_0003.jpg`` file name, a label the user typed)
  each column is right or wrong: ``"CMCE ensemble ✓ · dlib-resnet34 → sface ✗ (Unknown) ·
  facenet-casia → sface ✓ · sface alone ✓"``. "Unknown" is right exactly when the person
  has no searchable photo in the gallery;
* without one, agreement: ``"3 of 4 columns agree on Grace_Hopper; the ensemble's margin
  0.21"``, the margin being the ensemble's best similarity minus its best similarity to
  any other person among its matches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from cmce.errors import CmceError, one_named
from cmce.gallery.results import QueryResult, ViewResult

__all__ = ["ColumnVerdict", "QueryVerdict", "column_title", "ensemble_margin", "query_verdict", "searchable_labels"]

UNKNOWN = "Unknown"


def column_title(view: str, query_model: str) -> str:
    """A view's name in a verdict: ``CMCE ensemble``, ``dlib-resnet34 → sface``, ``sface alone``."""
    if view == "ensemble":
        return "CMCE ensemble"
    if view == "query":
        return f"{query_model} alone"
    return f"{view} → {query_model}"


@dataclass(frozen=True)
class ColumnVerdict:
    """What one column answered, and whether that was right.

    Attributes:
        view: ``"ensemble"``, a gallery model name, or ``"query"``.
        title: the column in words (``column_title``).
        answer: the person the column names (None: it says Unknown).
        correct: right or wrong against the query's identity (None: identity not known).
    """

    view: str
    title: str
    answer: str | None
    correct: bool | None

    @property
    def mark(self) -> str:
        """``"✓"``, ``"✗ (Unknown)"``, ``"✗ (Ada)"``, or the answer itself without an identity."""
        said = self.answer or UNKNOWN
        if self.correct is None:
            return said
        return "✓" if self.correct else f"✗ ({said})"


@dataclass(frozen=True)
class QueryVerdict:
    """The verdict of one query over every column.

    Attributes:
        identity: the query's known identity (None: not known).
        present: whether that person has a searchable photo in the gallery (None: no identity).
        columns: one per view, in the result's order (the ensemble first).
        agreed: the person most columns name (None: every column says Unknown).
        agreeing: how many columns name ``agreed``.
        margin: the ensemble's margin (``ensemble_margin``; None: no ensemble answer, or no
            other person among its matches).
    """

    identity: str | None
    present: bool | None
    columns: tuple[ColumnVerdict, ...]
    agreed: str | None
    agreeing: int
    margin: float | None

    def __post_init__(self) -> None:
        if not self.columns:
            raise CmceError("a verdict needs at least one column")
        if not 0 <= self.agreeing <= len(self.columns):
            raise CmceError(f"agreeing must be within 0..{len(self.columns)}, got {self.agreeing}")
        if (self.identity is None) != (self.present is None):
            raise CmceError("present is known exactly when the identity is")

    def column(self, view: str) -> ColumnVerdict:
        """The verdict of ``view``.

        Raises:
            CmceError: no such column; the message lists the ones there are.
        """
        return one_named(self.columns, view, key=lambda c: c.view, what="column", where=" in this verdict")

    @property
    def ensemble_only(self) -> tuple[str, ...]:
        """The columns that were wrong where the ensemble was right (empty without an identity)."""
        ens = next((c for c in self.columns if c.view == "ensemble"), None)
        if ens is None or ens.correct is not True:
            return ()
        return tuple(c.view for c in self.columns if c.correct is False)

    @property
    def text(self) -> str:
        """The verdict as one line (see the module docstring)."""
        if self.identity is not None:
            return " · ".join(f"{c.title} {c.mark}" for c in self.columns)
        n = len(self.columns)
        if self.agreed is None:
            return f"none of the {n} columns names anyone (all say Unknown)"
        text = f"{self.agreeing} of {n} columns agree on {self.agreed}"
        if self.margin is not None:
            text += f"; the ensemble's margin {self.margin:.2f}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-able data (what API clients get under ``verdict``)."""
        return {
            "text": self.text,
            "identity": self.identity,
            "present": self.present,
            "agreed": self.agreed,
            "agreeing": self.agreeing,
            "margin": None if self.margin is None else round(self.margin, 4),
            "ensemble_only": list(self.ensemble_only),
            "columns": {c.view: {"title": c.title, "answer": c.answer, "correct": c.correct} for c in self.columns},
        }


def _answer(view: ViewResult) -> str | None:
    if view.unknown or not view.matches:
        return None
    m = view.matches[0]
    return m.label or m.source


def ensemble_margin(view: ViewResult) -> float | None:
    """Best similarity minus the best similarity to any other person among the view's matches.

    None when the view says Unknown or no other person is among its matches. Unlabelled
    matches count as other people.

    Example:
        Matches Ada 0.71, Ada 0.64, Bob 0.50: the margin is 0.71 - 0.50 = 0.21.
    """
    name = _answer(view)
    if name is None:
        return None
    top = view.matches[0].score
    others = [m.score for m in view.matches[1:] if (m.label or m.source) != name or m.label is None]
    return float(top - max(others)) if others else None


def query_verdict(result: QueryResult, query_model: str, identity: str | None = None,
                  gallery_labels: Collection[str] | None = None) -> QueryVerdict:
    """The verdict of ``result``.

    Args:
        result: a photo query's result (``Gallery.search_image``).
        query_model: the bundle's query model (for the column titles).
        identity: who the query is, if known (empty: not known).
        gallery_labels: the labels of the gallery's searchable (live, not rejected)
            entries; "Unknown" is right exactly when ``identity`` is not among them
            (None: the person is taken to be in the gallery).

    Returns:
        QueryVerdict.

    Raises:
        CmceError: the result has no view.

    Example:
        The ensemble and the query model name "Grace_Hopper", dlib-resnet34's column says
        Unknown: with identity "Grace_Hopper" the text is ``"CMCE ensemble ✓ · dlib-resnet34
        → sface ✗ (Unknown) · sface alone ✓"``; without one, ``"2 of 3 columns agree on
        Grace_Hopper; ..."``.
    """
    identity = (identity or "").strip() or None
    present = None if identity is None else (True if gallery_labels is None else identity in gallery_labels)
    columns = []
    for view, v in result.views.items():
        answer = _answer(v)
        correct = None if identity is None else (answer == identity if present else answer is None)
        columns.append(ColumnVerdict(view, column_title(view, query_model), answer, correct))
    if not columns:
        raise CmceError("the result has no view to give a verdict on")
    named = Counter(c.answer for c in columns if c.answer is not None)
    ens = result.views.get("ensemble")
    if named:
        best = max(named.values())  # ties: the ensemble's answer, else the first column's
        order = [c.answer for c in columns if c.answer is not None and named[c.answer] == best]
        ens_answer = _answer(ens) if ens is not None else None
        agreed = ens_answer if ens_answer in order else order[0]
    else:
        agreed, best = None, 0
    return QueryVerdict(identity, present, tuple(columns), agreed, best,
                        ensemble_margin(ens) if ens is not None else None)


def searchable_labels(gallery, rejected: np.ndarray | None = None) -> frozenset[str]:
    """The labels of a gallery's live entries that are not ``rejected`` ((N,) bool over its
    entries; doubtful entries are searched, so they count): whom a search can name."""
    rej = np.zeros(len(gallery.entries), bool) if rejected is None else np.asarray(rejected, bool)
    return frozenset(gallery.entries[i].label for i in gallery.positions
                     if not rej[i] and gallery.entries[i].label is not None)
