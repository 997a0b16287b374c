"""People in unlabelled photo libraries: a gallery's faces grouped into people.

* :mod:`cmce.people.grouping`: ``group_faces`` (vectors in, an immutable ``PeopleGrouping`` out),
  ``GroupingConfig``, ``Person``, ``UnsureFace``;
* :mod:`cmce.people.graph`: the k-nearest-neighbour similarity graph from a search index and the
  clusterings compared on it;
* :mod:`cmce.people.constraints`: must-link / cannot-link constraints and their enforcement;
* :mod:`cmce.people.calibration`: the threshold from a bundle's training identities;
* :mod:`cmce.people.library`: ``group_gallery`` over a saved gallery.
"""

from cmce.people.grouping import GroupingConfig, PeopleGrouping, Person, UnsureFace, group_faces

__all__ = ["GroupingConfig", "PeopleGrouping", "Person", "UnsureFace", "group_faces"]
