"""The demo's "People" tab: the session's gallery grouped into people, and the user's corrections.

Each handler takes the session (``gr.State``) and strings (so that ``gradio_client`` can call it:
``people_group``, ``people_name``, ``people_merge``, ``people_split``, ``people_not``,
``people_find``, ``people_forget``), regroups the session's in-memory ``Gallery`` with its corrections
(:func:`cmce.people.library.group_gallery` over ``Gallery.records()``) and returns the page:
one row of thumbnails per person (its key, name and faces), the unsure faces apart, and the
choices of the person and face pickers. In the browser each person's row also has its own name
box (``render_people``, under ``gr.render``: the rows of the session's last page, not regrouped). A correction is translated into corrections rows
(:mod:`cmce.people.corrections`), checked, and becomes the gallery's corrections; a refused one
raises a ``gr.Error`` that says why, and nothing changes.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import gradio as gr

from cmce.errors import CmceError
from cmce.gallery.memory import Gallery
from cmce.people.corrections import CorrectionChange, checked, merge_people, name_person, not_person, split_person
from cmce.people.grouping import GroupingConfig
from cmce.people.library import GalleryPeople, bundle_grouping_config, group_gallery
from cmce.serve.guard import clip, counted, user_error
from cmce.serve.sessions import Session

__all__ = ["PEOPLE_FALLBACK", "PeoplePage", "PersonRow", "forget_question", "people_find", "people_forget", "people_group",
           "people_merge", "people_name", "people_not", "people_split", "render_people"]

PEOPLE_FALLBACK = GroupingConfig(threshold=0.5, method="chinese_whispers")
"""The grouping of a bundle without a grouping calibration (the page says so)."""

EMPTY = "<p>Index a gallery, then press <b>Group faces</b>.</p>"

ROWS_WITH_NAME_BOX = 60
"""People shown with a name box of their own; the rest (rare in a demo gallery) are named with the picker."""


@dataclass(frozen=True)
class PersonRow:
    """One person of a page: its key (what a command takes), its name, its number of faces, its row's HTML."""

    key: str
    name: str | None
    faces: int
    html: str


@dataclass(frozen=True)
class PeoplePage:
    """What every People handler returns: the page's HTML, its summary, and the pickers' choices.

    ``html`` is every row and the unsure faces in one piece (the endpoints' first output);
    ``rows`` and ``unsure`` are the same, apart, for the rows with a name box each.
    """

    html: str
    summary: str
    people: list[tuple[str, str]]
    entries: list[tuple[str, str]]
    rows: tuple[PersonRow, ...] = ()
    unsure: str = ""

    def outputs(self) -> tuple:
        """The values of (rows, summary, person, other person, face) in the page."""
        first = self.people[0][1] if self.people else None
        second = self.people[1][1] if len(self.people) > 1 else None
        return (self.html, self.summary, gr.update(choices=self.people, value=first),
                gr.update(choices=self.people, value=second), gr.update(choices=self.entries, value=None))


def _gallery(state: Session | None) -> Gallery:
    if state is None or state.closed or not len(state.gallery):
        raise user_error("No gallery yet: index some photos (step 1), then group their faces.")
    return state.gallery


def _text(value: object, what: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise user_error(f"{what} is empty: choose or type one.")
    if not isinstance(value, str):
        raise user_error(f"{what} must be text, got {type(value).__name__}")
    return value.strip()


def _group(gallery: Gallery) -> tuple[GalleryPeople, str]:
    bundle = gallery.bundle
    note = ""
    try:
        cfg = bundle_grouping_config(bundle)
    except CmceError:
        cfg = PEOPLE_FALLBACK
        note = f" (bundle without a grouping calibration: threshold {cfg.threshold:g})"
    try:
        return group_gallery(gallery.records(), bundle, config=cfg, corrections=gallery.corrections), note
    except CmceError as e:
        raise user_error(f"Could not group the faces: {e}") from None


def _thumb(entry_id: str, source: str, thumbs: dict[str, bytes]) -> str:
    data = thumbs.get(entry_id)
    src = f"data:image/jpeg;base64,{base64.b64encode(data).decode()}" if data else ""
    tip = html.escape(f"{source} · {entry_id}")
    return f'<img class="cmce-person-face" src="{src}" title="{tip}" alt="{tip}" data-entry="{html.escape(entry_id)}">'


def _page(gallery: Gallery, people: GalleryPeople, note: str = "", only: str | None = None) -> PeoplePage:
    thumbs = {eid: gallery.entries[int(pos)].thumbnail for pos, eid in zip(gallery.positions, gallery.entry_ids())}
    rows = []
    for p in people.grouping.people:
        if only is not None and p.name != only:
            continue
        key = people.short_key(p)
        faces = "".join(_thumb(people.entry_ids[i], people.sources[i], thumbs) for i in p.members)
        title = (f"<b class='cmce-person-name'>{html.escape(p.name)}</b>" if p.name else
                 f"<span class='cmce-person-name'>unnamed</span> <code>{html.escape(key)}</code>")
        rows.append(PersonRow(key, p.name, len(p.members), (
            f"<div class='cmce-person' data-key='{html.escape(key)}'><div class='cmce-person-head'>{title} · "
            f"{counted(len(p.members), 'face')}</div>{faces}</div>")))
    unsure = ""
    if only is None and people.grouping.unsure:
        faces = "".join(_thumb(people.entry_ids[u.position], f"{people.sources[u.position]} ({u.reason})", thumbs)
                        for u in people.grouping.unsure)
        unsure = (f"<div class='cmce-person cmce-unsure' id='people-unsure'><div class='cmce-person-head'>"
                  f"Unsure ({len(people.grouping.unsure)}): not given to anyone</div>{faces}</div>")
    choices = [(f"{p.name or people.short_key(p)} · {counted(len(p.members), 'face')}", people.short_key(p))
               for p in people.grouping.people]
    entries = [(f"{people.sources[i]} · {people.entry_ids[i][:12]}", people.entry_ids[i])
               for i in range(people.grouping.size)]
    whole = "".join(r.html for r in rows) + unsure
    return PeoplePage(whole or "<p>No person found.</p>", people.summary() + note, choices, entries, tuple(rows), unsure)


def _shown(state: Session, page: PeoplePage) -> PeoplePage:
    """Remember the page as the session's last (its rows are what ``render_people`` draws)."""
    state.people_page = page
    return page


def people_group(state: Session | None) -> tuple:
    """The session's gallery grouped into people (its corrections honoured)."""
    gallery = _gallery(state)
    people, note = _group(gallery)
    return _shown(state, _page(gallery, people, note)).outputs()


def _correct(state: Session | None, make) -> tuple:
    gallery = _gallery(state)
    people, note = _group(gallery)
    try:
        change: CorrectionChange = make(people)
        new = checked(people, change.applied_to(gallery.corrections), "this gallery")
        gallery.replace_corrections(new)
    except CmceError as e:
        raise user_error(f"Not changed: {e}") from None
    state.risk_cache = None  # the scoreboard reads the labels, which a name changes
    people, note = _group(gallery)
    page = _shown(state, _page(gallery, people, note))
    return (page.html, f"{change.description}. {page.summary}", *page.outputs()[2:])


def people_name(person: str, name: str, state: Session | None) -> tuple:
    """Name a person (its key, a name, or one of its entry ids)."""
    person, name = _text(person, "The person"), _text(name, "The name")
    return _correct(state, lambda people: name_person(people, person, clip(name, 200)))


def people_merge(person: str, other: str, state: Session | None) -> tuple:
    """Merge two people."""
    person, other = _text(person, "The person"), _text(other, "The other person")
    return _correct(state, lambda people: merge_people(people, person, other))


def people_split(person: str, state: Session | None) -> tuple:
    """Split a person in two by its faces' vectors."""
    person = _text(person, "The person")
    return _correct(state, lambda people: split_person(people, person))


def people_not(entry: str, person: str, state: Session | None) -> tuple:
    """This face is not this person."""
    entry, person = _text(entry, "The face"), _text(person, "The person")
    return _correct(state, lambda people: not_person(people, entry, person))


def forget_question(person: str, state: Session | None) -> tuple:
    """The page's question before *Forget person* erases anything: who, how many faces, and that it
    cannot be undone (the confirmation row shown, its text). ``/people_forget`` itself asks nothing:
    an API caller names the person it means."""
    person = _text(person, "The person")
    people, _ = _group(_gallery(state))
    try:
        who = people.person(person)
    except CmceError as e:
        raise user_error(f"Not changed: {e}") from None
    n = len(who.members)
    title = html.escape(who.name or people.short_key(who))
    return (gr.update(visible=True),
            f"Forget **{title}**? {counted(n, 'face')}, {'their' if n != 1 else 'its'} embeddings, "
            "thumbnails and kept photos are erased from this gallery. This cannot be undone.")


def people_forget(person: str, state: Session | None) -> tuple:
    """Erase a person from the session's gallery: its faces, their embeddings and thumbnails, the
    corrections that mention them, and the kept copy of each photo no other face holds (``Gallery.remove``)."""
    person = _text(person, "The person")
    gallery = _gallery(state)
    people, _ = _group(gallery)
    try:
        who = people.person(person)
    except CmceError as e:
        raise user_error(f"Not changed: {e}") from None
    erased = {people.entry_ids[i] for i in who.members}
    with state.busy:
        gallery.remove([int(p) for p, e in zip(gallery.positions, gallery.entry_ids()) if e in erased])
    state.risk_cache = None
    title = who.name or people.short_key(who)
    done = f"Forgot {title}: {counted(len(erased), 'face')} erased"
    if not len(gallery):
        state.people_page = None
        return EMPTY, f"{done}; the gallery is empty.", *PeoplePage(EMPTY, "", [], []).outputs()[2:]
    people, note = _group(gallery)
    page = _shown(state, _page(gallery, people, note))
    return (page.html, f"{done}. {page.summary}", *page.outputs()[2:])


def people_find(name: str, state: Session | None) -> tuple:
    """The person of that name (the summary says when nobody has it)."""
    name = _text(name, "The name")
    gallery = _gallery(state)
    people, note = _group(gallery)
    if not any(p.name == name for p in people.grouping.people):
        named = sorted({p.name for p in people.grouping.people if p.name})
        raise user_error(f"Nobody is named {clip(name, 60)!r}; "
                         + (f"named: {', '.join(named[:10])}" if named else "no person is named yet"))
    page = _shown(state, _page(gallery, people, note, only=name))
    return (page.html, f"{name}: {page.summary}", *page.outputs()[2:])


def render_people(state: Session | None, outputs: Sequence[gr.components.Component], session: gr.State,
                  **queue: object) -> None:
    """The session's last page as rows of components, each person with a name box (call under ``gr.render``).

    A name typed in a row's box (Enter, or its *Save name* button) runs ``people_name`` on that
    person's key; its outputs are ``outputs`` (the page's HTML, summary and pickers), whose new
    HTML draws the rows again. These events are not API endpoints (``people_name`` is).
    """
    page: PeoplePage | None = state.people_page if state is not None and not state.closed else None
    if page is None:
        return
    for row in page.rows[:ROWS_WITH_NAME_BOX]:
        with gr.Row(elem_classes=["cmce-person-row"], equal_height=False):
            with gr.Column(scale=1, min_width=200):
                box = gr.Textbox(row.name or "", label=f"Name of {row.name or row.key}", max_lines=1,
                                 placeholder="type a name, press Enter", interactive=True,
                                 elem_classes=["cmce-row-name"])
                save = gr.Button("Save name", size="sm", elem_classes=["cmce-row-save"])
            with gr.Column(scale=4, min_width=300):
                gr.HTML(row.html, elem_classes=["cmce-row-faces"])
        for event in (save.click, box.submit):
            event(partial(people_name, row.key), [box, session], list(outputs), api_visibility="private", **queue)
    rest = page.rows[ROWS_WITH_NAME_BOX:]
    if rest:
        gr.HTML(f"<p>{len(rest)} more people: name them with the person picker above.</p>"
                + "".join(r.html for r in rest), elem_classes=["cmce-row-faces"])
    if page.unsure:
        gr.HTML(page.unsure, elem_classes=["cmce-row-faces"])
