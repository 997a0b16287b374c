"""The demo's People tab: its widgets and events, over the handlers of :mod:`cmce.serve.people_view`.

:func:`build` lays the tab out (call it inside the page's ``gr.Blocks``) and returns its components
by name; :func:`wire` connects them: one ``gradio_client`` endpoint per handler (``people_group``,
``people_name``, ``people_merge``, ``people_split``, ``people_not``, ``people_find``,
``people_forget``), the question the page asks before *Forget person*, the overview refreshed when
the people change (their names are its captions), and a row per person with its own name box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from cmce.serve import people_view

__all__ = ["build", "wire"]


def build() -> dict[str, Any]:
    """The tab's components by name: the buttons, pickers and boxes, the summary and the rows."""
    c: dict[str, Any] = {}
    with gr.Tabs(elem_id="people-tabs"), gr.Tab("People", elem_id="people-tab"):
        with gr.Row():
            c["group"] = gr.Button("Group faces", variant="primary", elem_id="people-group", scale=1)
            c["find_name"] = gr.Textbox(label="Find a person by name", elem_id="people-find-name", scale=2)
            c["find"] = gr.Button("Find", elem_id="people-find", scale=1)
        with gr.Row():
            c["person"] = gr.Dropdown([], label="Person", allow_custom_value=True, elem_id="people-person", scale=2)
            c["name"] = gr.Textbox(label="Name", placeholder="e.g. Ada", elem_id="people-name-box", scale=2)
            c["name_btn"] = gr.Button("Name", elem_id="people-name", scale=1)
            c["split_btn"] = gr.Button("Split in two", elem_id="people-split", scale=1)
            c["forget_btn"] = gr.Button("Forget person", variant="stop", elem_id="people-forget", scale=1)
        with gr.Row(visible=False, elem_id="people-forget-confirm") as c["confirm_row"]:
            c["confirm_md"] = gr.Markdown(elem_id="people-forget-question")
            c["forget_yes"] = gr.Button("Yes, forget", variant="stop", elem_id="people-forget-yes", scale=0)
            c["forget_no"] = gr.Button("Cancel", elem_id="people-forget-cancel", scale=0)
        with gr.Row():
            c["other"] = gr.Dropdown([], label="Other person", allow_custom_value=True, elem_id="people-other", scale=2)
            c["merge_btn"] = gr.Button("Merge with person", elem_id="people-merge", scale=1)
            c["entry"] = gr.Dropdown([], label="Face", allow_custom_value=True, elem_id="people-entry", scale=2)
            c["not_btn"] = gr.Button("Not this person", elem_id="people-not", scale=1)
        c["summary"] = gr.Markdown("Index a gallery, then press **Group faces**.", elem_id="people-summary")
        # every row in one piece: the endpoints' output, kept in the page (hidden) to draw the rows below
        c["rows"] = gr.HTML(people_view.EMPTY, elem_id="people-rows", visible="hidden")
        c["person_rows"] = gr.Column(elem_id="people-person-rows")
    return c


def wire(c: dict[str, Any], state: gr.State, refresh: Callable[..., Any], refresh_inputs: Sequence[Any],
         refresh_outputs: Sequence[Any], queue: dict[str, Any]) -> None:
    """The tab's events: each handler on the session ``state`` in the ``queue`` given (its
    ``concurrency_id`` and limit), and ``refresh(*refresh_inputs) -> refresh_outputs`` (the
    gallery overview) whenever the people change."""
    out = [c["rows"], c["summary"], c["person"], c["other"], c["entry"]]
    for btn, fn, inputs in ((c["group"], people_view.people_group, []),
                            (c["name_btn"], people_view.people_name, [c["person"], c["name"]]),
                            (c["merge_btn"], people_view.people_merge, [c["person"], c["other"]]),
                            (c["split_btn"], people_view.people_split, [c["person"]]),
                            (c["forget_yes"], people_view.people_forget, [c["person"]]),
                            (c["not_btn"], people_view.people_not, [c["entry"], c["person"]]),
                            (c["find"], people_view.people_find, [c["find_name"]])):
        btn.click(fn, [*inputs, state], out, api_name=fn.__name__, **queue)
    hide = gr.update(visible=False)  # forgetting asks first; the question goes with any change of person
    c["forget_btn"].click(people_view.forget_question, [c["person"], state], [c["confirm_row"], c["confirm_md"]],
                          api_visibility="private", **queue)
    for trigger in (c["forget_yes"].click, c["forget_no"].click, c["person"].change):
        trigger(lambda: hide, None, c["confirm_row"], api_visibility="private", queue=False)
    c["rows"].change(refresh, list(refresh_inputs), list(refresh_outputs),  # names in the overview's captions
                     trigger_mode="always_last", api_visibility="private")
    with c["person_rows"]:  # a row per person with its own name box, drawn again whenever the page changes
        @gr.render(inputs=[state], triggers=[c["rows"].change], **queue)
        def _person_rows(session):
            people_view.render_people(session, out, state, **queue)
