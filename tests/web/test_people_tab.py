"""The People tab in chromium on an unlabelled upload of group photos, and its gradio_client endpoints.

The upload: camera-like photos with two or three faces each, made by pasting LFW photos of
different people side by side (written under ``tmp_path`` only), with names that carry no
label. Indexed in the browser, grouped (a row with a name box per person), one person named from
its row, two people merged, renamed with Enter in the row's box, a face taken out with "not this
person" (its name gone from the rows and the overview's captions at once), found by name;
screenshots go to ``tmp_path`` and ``/tmp/cmce_screens/`` (``people-*.png``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import lfw_people
from PIL import Image

from browser_page import DESKTOP, TIMEOUT_MS, open_page, shot, wait_text
from browser_page import pytestmark  # noqa: F401  (e2e; skipped without chromium or Playwright)


def group_photos(lfw_dir: Path, dest: Path, people: int = 4) -> list[Path]:
    """Photos of 2-3 faces each, one LFW photo of a different person per third, names without labels."""
    folders = lfw_people(lfw_dir, people, min_images=3)
    photos = [sorted(f.glob("*.jpg"))[:3] for f in folders]
    dest.mkdir(parents=True, exist_ok=True)
    layouts = [(0, 1), (2, 3), (0, 2, 1), (3, 1), (0, 2)]  # which people, left to right: 0 and 3 never together
    used = [0] * people
    out = []
    for n, who in enumerate(layouts):
        tiles = []
        for p in who:
            tiles.append(Image.open(photos[p][used[p] % len(photos[p])]).convert("RGB"))
            used[p] += 1
        canvas = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), (90, 90, 90))
        x = 0
        for t in tiles:
            canvas.paste(t, (x, 0))
            x += t.width
        path = dest / f"img{n:02d}-camera.jpg"
        canvas.save(path, quality=92)
        out.append(path)
    return out


def _shot(page, tmp_path: Path, name: str) -> None:
    page.evaluate("document.querySelector('#people-person').scrollIntoView({block: 'start'})")  # controls, rows
    shot(page, tmp_path, name)


def _wait_summary(page, text: str) -> None:
    page.wait_for_function("(t) => { const e = document.querySelector('#people-summary');"
                           " return e && e.innerText.includes(t); }", arg=text, timeout=TIMEOUT_MS)
    page.wait_for_timeout(300)


ROWS = "#people-person-rows"

DISJOINT = """() => {
  const rows = Array.from(document.querySelectorAll('#people-person-rows .cmce-person:not(.cmce-unsure)'));
  const photos = rows.map(r => new Set(Array.from(r.querySelectorAll('img')).map(i => i.title.split(' · ')[0])));
  for (let a = 0; a < rows.length; a++) for (let b = a + 1; b < rows.length; b++)
    if (![...photos[a]].some(x => photos[b].has(x))) return [rows[a].dataset.key, rows[b].dataset.key];
  return null;
}"""

# the overview's captions that carry a name, and the rendered row of that person: its faces' photos
CAPTIONS = """(name) => Array.from(document.querySelectorAll('#overview .caption-label, #overview figcaption'))
  .map(e => e.innerText).filter(t => t.includes(name)).length"""


def _pick(page, selector: str, value: str) -> None:
    box = page.locator(f"{selector} input").first
    box.fill(value)
    box.press("Enter")
    page.wait_for_timeout(300)


def _people_count(page) -> int:
    text = page.locator("#people-summary").inner_text()
    found = re.search(r"(\d+) people", text)
    assert found, text
    return int(found.group(1))


def _row(page, key_or_name: str):
    """The rendered row (name box, Save button, thumbnails) of the person with that key or name."""
    row = page.locator(f"{ROWS} .cmce-person-row").filter(
        has=page.locator(f".cmce-person[data-key='{key_or_name}']"))
    return row.first


def _wait_rows(page, name: str | None = None) -> None:
    """The rows drawn again after a change (with ``name`` in a row's head when given)."""
    page.wait_for_function("(n) => { const h = Array.from(document.querySelectorAll("
                           "'#people-person-rows .cmce-person-row .cmce-person-head')).map(e => e.innerText);"
                           " return h.length > 0 && (n === null || h.some(t => t.includes(n))); }",
                           arg=name, timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)


def test_people_tab_groups_an_unlabelled_upload_names_merges_and_forgets(app_server, lfw_dir, tmp_path) -> None:
    photos = group_photos(lfw_dir, tmp_path / "upload")
    with open_page(app_server["url"], DESKTOP) as page:
        page.locator("#gallery-files input[type=file]").first.set_input_files([str(x) for x in photos])
        page.wait_for_function("document.querySelectorAll('#gallery-files tr, #gallery-files li').length >= 5",
                               timeout=TIMEOUT_MS)
        page.wait_for_timeout(1000)
        page.click("#index-btn")
        page.wait_for_function("() => document.querySelector('#index-report').innerText.includes("
                               "'faces indexed from 5 files')", timeout=TIMEOUT_MS)
        page.wait_for_timeout(1000)
        page.locator("#people-tab-button, button[role=tab]:has-text('People')").first.click()
        page.click("#people-group")
        _wait_summary(page, "unsure")
        _wait_rows(page)
        assert page.locator(".toast-body, [data-testid=toast-body]").count() == 0  # no error on an unlabelled upload
        _shot(page, tmp_path, "people-grouped")
        faces = page.locator(f"{ROWS} .cmce-person-face").count()
        assert faces >= 10, page.locator("#people-summary").inner_text()  # 11 faces in 5 photos
        before = _people_count(page)
        assert before >= 2
        # a name box per person: one row with a box and a button for each person found
        rows = page.locator(f"{ROWS} .cmce-person-row")
        assert rows.count() == before
        assert page.locator(f"{ROWS} .cmce-row-name").count() == before
        assert page.locator(f"{ROWS} .cmce-row-save").count() == before

        # two people never in one photo (one photo's faces are never one person: that merge is refused)
        pair = page.evaluate(DISJOINT)
        assert pair, page.locator(ROWS).inner_text()
        row = _row(page, pair[0])
        row.locator(".cmce-row-name textarea, .cmce-row-name input").first.fill("Ada Lovelace")
        row.locator(".cmce-row-save button, button.cmce-row-save").first.click()
        _wait_summary(page, "named person")
        _wait_rows(page, "Ada Lovelace")
        assert "named person" in page.locator("#people-summary").inner_text()
        named = _row(page, "Ada Lovelace")
        assert named.locator(".cmce-row-name textarea, .cmce-row-name input").first.input_value() == "Ada Lovelace"
        _shot(page, tmp_path, "people-named")

        _pick(page, "#people-person", "Ada Lovelace")
        _pick(page, "#people-other", pair[1])
        page.click("#people-merge")
        _wait_summary(page, "merged person")
        summary = page.locator("#people-summary").inner_text()
        assert "merged person Ada Lovelace" in summary, summary
        _wait_rows(page, "Ada Lovelace")
        assert _people_count(page) == before - 1
        assert page.locator(f"{ROWS} .cmce-person-row").count() == before - 1
        _shot(page, tmp_path, "people-merged")

        # a name typed in the row's box and Enter renames the person
        box = _row(page, "Ada Lovelace").locator(".cmce-row-name textarea, .cmce-row-name input").first
        box.fill("Ada King")
        box.press("Enter")
        _wait_summary(page, "Ada King")
        _wait_rows(page, "Ada King")
        ada = _row(page, "Ada King")
        ada_faces = ada.locator(".cmce-person-face").count()
        assert ada_faces >= 2
        page.wait_for_function(f"() => ({CAPTIONS})('Ada King') === {ada_faces}", timeout=TIMEOUT_MS)

        # "not this person" on one of Ada's faces: the face loses the name in the live session at once,
        # in the People rows and in the overview's captions (the gallery's labels)
        face = ada.locator(".cmce-person-face").first.get_attribute("data-entry")
        _pick(page, "#people-entry", face)
        _pick(page, "#people-person", "Ada King")
        page.click("#people-not")
        _wait_summary(page, "is not person Ada King")
        _wait_rows(page, "Ada King")
        ada = _row(page, "Ada King")
        assert ada.locator(".cmce-person-face").count() == ada_faces - 1
        assert ada.locator(f".cmce-person-face[data-entry='{face}']").count() == 0
        page.wait_for_function(f"() => ({CAPTIONS})('Ada King') === {ada_faces - 1}", timeout=TIMEOUT_MS)
        _shot(page, tmp_path, "people-not")
        page.evaluate("document.querySelector('#overview').scrollIntoView({block: 'start'})")
        shot(page, tmp_path, "people-overview")

        page.locator("#people-find-name textarea, #people-find-name input").first.fill("Ada King")
        page.click("#people-find")
        _wait_summary(page, "Ada King: ")
        page.wait_for_function("() => document.querySelectorAll('#people-person-rows .cmce-person-row').length"
                               " === 1", timeout=TIMEOUT_MS)
        assert page.locator(f"{ROWS} .cmce-unsure").count() == 0
        _shot(page, tmp_path, "people-found")

        # forgetting asks first (who, how many faces, that it cannot be undone); Cancel erases nothing
        _pick(page, "#people-person", "Ada King")
        page.click("#people-forget")
        question = page.locator("#people-forget-question")
        question.wait_for(state="visible", timeout=TIMEOUT_MS)
        wait_text(page, "#people-forget-question", "Forget Ada King? ")
        assert f"{ada_faces - 1} face" in question.inner_text() and "cannot be undone" in question.inner_text()
        _shot(page, tmp_path, "people-forget-question")
        page.click("#people-forget-cancel")
        page.locator("#people-forget-confirm").wait_for(state="hidden", timeout=TIMEOUT_MS)
        assert page.locator(f"{ROWS} .cmce-person-face").count() > 0
        page.wait_for_function(f"() => ({CAPTIONS})('Ada King') === {ada_faces - 1}", timeout=TIMEOUT_MS)
        # asked again and confirmed, Ada's faces leave the session's gallery: gone from the rows and the overview
        page.click("#people-forget")
        page.locator("#people-forget-yes").wait_for(state="visible", timeout=TIMEOUT_MS)
        page.click("#people-forget-yes")
        _wait_summary(page, "Forgot Ada King")
        page.locator("#people-forget-confirm").wait_for(state="hidden", timeout=TIMEOUT_MS)
        _wait_rows(page)
        heads = page.locator(f"{ROWS} .cmce-person-head").all_inner_texts()
        assert heads and not any("Ada King" in h for h in heads), heads
        page.wait_for_function(f"() => ({CAPTIONS})('Ada King') === 0", timeout=TIMEOUT_MS)
        _shot(page, tmp_path, "people-forgot")


def test_people_endpoints_give_named_errors_for_bad_input(app_server) -> None:
    client_mod = pytest.importorskip("gradio_client")
    client = client_mod.Client(app_server["url"], verbose=False)
    cases = [("/people_group", (), "No gallery yet"),
             ("/people_name", ("", "Ada"), "The person is empty"),
             ("/people_merge", ("a", "b"), "No gallery yet"),
             ("/people_split", ("a",), "No gallery yet"),
             ("/people_not", ("", "Ada"), "The face is empty"),
             ("/people_find", ("Nobody",), "No gallery yet"),
             ("/people_forget", ("a",), "No gallery yet")]
    for api, args, message in cases:
        with pytest.raises(Exception, match=message):
            client.predict(*args, None, api_name=api)


def test_the_people_endpoints_are_the_seven_with_their_outputs(app_server) -> None:
    """The rows with a name box each add no endpoint: the API is the seven People endpoints (forget among them),
    each returning the page's HTML, summary and the three pickers."""
    client_mod = pytest.importorskip("gradio_client")
    api = client_mod.Client(app_server["url"], verbose=False).view_api(print_info=False, return_format="dict")
    people = {name: info for name, info in api["named_endpoints"].items() if "people" in name}
    assert set(people) == {"/people_group", "/people_name", "/people_merge", "/people_split", "/people_not",
                           "/people_find", "/people_forget"}, sorted(people)
    assert {name: len(info["returns"]) for name, info in people.items()} == dict.fromkeys(people, 5)
    assert [p["parameter_name"] for p in people["/people_name"]["parameters"]] == ["person", "name"]
