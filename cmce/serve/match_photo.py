"""A match of the last search, shown in its source photo with its face boxed.

The session keeps a downscaled copy of each photo it indexed (``Session.photos``,
``cmce.gallery.source_photos``; an example gallery's photos ship with the app) and the entry
ids of its last search's matches (``Session.last_matches``). :func:`match_photo` finds the
match a column and rank name, and draws its face box (and, faintly, the photo's other
gallery faces) on the kept photo. A restored gallery holds no photos: that is said
plainly instead.
"""

from __future__ import annotations

import html
from PIL import Image

from cmce.gallery.verdict import column_title
from cmce.serve.display import match_photo_image
from cmce.serve.guard import clip, counted, user_error
from cmce.serve.sessions import Session

__all__ = ["match_photo", "NO_MATCH_YET"]

NO_MATCH_YET = "Click a match in the results to see it in its photo."


def match_photo(session: Session, column: str, rank: int) -> tuple[Image.Image | None, str]:
    """The photo of match ``rank`` (1 = best) of ``column`` in the session's last search.

    Returns:
        The photo with the match's face boxed (None when no photo is kept), and one markdown
        line saying whose face it is, or why there is no photo.

    Raises:
        gr.Error: no search yet, a column the last search does not have, or a rank past its matches.
    """
    if not session.last_matches:
        raise user_error("Search first: then click a match (or name its column and rank) to see it in its photo.")
    ids = session.last_matches.get(column)
    if ids is None:
        raise user_error(f"The column must be one of {', '.join(session.last_matches)}, got {clip(column, 40)!r}")
    if not 1 <= rank <= len(ids):
        raise user_error(f"The {column} column of the last search has {len(ids)} matches: the rank must be from 1 "
                         f"to {len(ids)}, got {rank}")
    gallery = session.gallery
    by_id = {e.entry_id: p for p, e in ((int(p), gallery.entries[int(p)]) for p in gallery.positions)}
    position = by_id.get(ids[rank - 1])
    if position is None:
        raise user_error("That match is no longer in the gallery (it was changed since the search): search again.")
    entry = gallery.entries[position]
    who = html.escape(entry.label or "an unlabelled face")
    title = f"**{who}**, match {rank} of {html.escape(column_title(column, gallery.bundle.query_model))}"
    opened = session.photos.open(entry.content_hash) if session.photos is not None else None
    if opened is None:
        if session.photos is not None and session.photos.was_refused(entry.content_hash):
            return None, (f"{title}: its photo was not kept, as this session's room for photos "
                          f"({session.photos.max_bytes / 2**20:.0f} MiB) was full when it was indexed.")
        return None, (f"{title}: no photo to show. This face came from a restored gallery, and a downloaded "
                      "gallery holds the faces' thumbnails and embeddings, not the photos.")
    image, scale = opened
    others = [[x * scale for x in gallery.entries[int(p)].face.box] for p in gallery.positions
              if gallery.entries[int(p)].content_hash == entry.content_hash and int(p) != position]
    box = [x * scale for x in entry.face.box]
    more = f"; the photo's {counted(len(others), 'other gallery face')} faint" if others else ""
    return (match_photo_image(image, box, others),
            f"{title}, in its photo `{html.escape(clip(entry.source, 80))}` (face boxed in green{more}).")

