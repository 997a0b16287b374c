"""The page as people use it (issue 25), in chromium at 1400x900 and 390x844.

The task above the fold (gallery upload, query photo, example pictures); one click from an
example to a result and its verdict; on a phone the verdict and the ensemble's top match in
view together after a search; the scoreboard of a labelled gallery; download -> restore giving
the same results; no name cut. Screenshots go to ``tmp_path`` and ``/tmp/cmce_screens/``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import lfw_people

from browser_page import DESKTOP, PHONE, TIMEOUT_MS, idle, in_view, open_page, shot, shot_of, wait_text
from browser_page import pytestmark  # noqa: F401  (e2e; skipped without chromium or Playwright)

# names cut by CSS (text wider than its box, hidden) or by an ellipsis, anywhere a name is shown
CUT_NAMES = """() => {
  const out = [];
  for (const e of document.querySelectorAll('.cmce-label, .cmce-verdict b, #overview .caption-label, .cmce-picks .caption-label')) {
    const s = getComputedStyle(e);
    const clipped = e.scrollWidth > e.clientWidth + 1 && (s.overflow === 'hidden' || s.textOverflow === 'ellipsis');
    if (clipped || e.innerText.includes('…')) out.push(e.innerText);
  }
  return out;
}"""


def test_the_task_is_above_the_fold_and_one_click_gives_a_verdict(app_server, tmp_path):
    with open_page(app_server["url"], DESKTOP) as page:
        assert page.evaluate("window.scrollY") == 0
        for selector in ("#gallery-files", "#gallery-folder", "#index-btn", "#query-image",
                         "#example-galleries .thumbnail-item", "#example-queries .thumbnail-item",
                         "#one-click .thumbnail-item"):
            assert in_view(page, page.locator(selector).first), f"{selector} is not on the first screen"
        assert page.locator("#example-galleries img").count() == 2  # pictures, not text buttons
        assert "How to read the columns" not in page.inner_text("#story")  # the story is collapsed
        shot(page, tmp_path, "layout_desktop_first_screen")

        page.locator("#one-click .thumbnail-item").first.click()  # facenet-query's: the paper's regime
        page.wait_for_selector("#verdict-line", timeout=TIMEOUT_MS)
        idle(page)
        verdict = page.inner_text("#verdict-line")
        assert verdict.startswith("Verdict: CMCE ensemble ✓") and "✗ (Unknown)" in verdict, verdict
        assert "the ensemble is right where" in verdict
        picked = page.locator("#bundle-picker input").input_value()
        assert "facenet-query" in picked, picked
        assert page.evaluate(CUT_NAMES) == []
        page.locator("#results").scroll_into_view_if_needed()
        shot(page, tmp_path, "layout_desktop_verdict")


def test_on_a_phone_the_verdict_and_the_top_match_are_in_view_together(app_server, tmp_path):
    with open_page(app_server["url"], PHONE) as page:
        assert in_view(page, page.locator("#gallery-files"))
        shot(page, tmp_path, "layout_phone_first_screen")
        page.locator("#example-galleries .thumbnail-item", has_text="Two pioneers").click()
        wait_text(page, "#index-report", "faces indexed from 5 files")
        idle(page)
        page.locator("#example-queries .thumbnail-item", has_text="Grace Hopper, dark").first.click()
        page.wait_for_selector("#verdict-line", timeout=TIMEOUT_MS)
        idle(page)
        page.locator("#verdict-line").scroll_into_view_if_needed()
        top = page.locator("#results section[data-view=ensemble] li.cmce-match").first
        assert "Grace_Hopper" in top.inner_text()
        assert in_view(page, page.locator("#verdict-line")) and in_view(page, top)
        # the columns are swiped: side by side in one scrolling row, not stacked
        boxes = page.locator("#results section.cmce-view").evaluate_all(
            "els => els.map(e => e.getBoundingClientRect().top)")
        assert len(set(round(t) for t in boxes)) == 1, boxes
        page.mouse.wheel(0, 400)  # the verdict line stays on screen while the column scrolls
        page.wait_for_timeout(300)
        assert in_view(page, page.locator("#verdict-line"))
        assert page.evaluate(CUT_NAMES) == []
        shot(page, tmp_path, "layout_phone_results")


@pytest.fixture()
def labelled_folder(lfw_dir, tmp_path) -> tuple[Path, list[Path]]:
    people = lfw_people(lfw_dir, 4)
    root = tmp_path / "friends"
    for person in people:
        (root / person.name).mkdir(parents=True)
        for i, f in enumerate(sorted(person.glob("*.jpg"))[:2]):
            shutil.copy(f, root / person.name / f"IMG_{i:04d}.jpg")  # labels only from the folders
    return root, people


def test_scoreboard_and_download_restore_give_the_same_results(app_server, labelled_folder, tmp_path):
    root, people = labelled_folder
    query = sorted(people[1].glob("*.jpg"))[2]
    with open_page(app_server["url"], DESKTOP, downloads=True) as page:
        page.locator("#gallery-folder input[type=file]").set_input_files(str(root))
        page.wait_for_function("document.querySelectorAll('#gallery-folder tr, #gallery-folder li').length >= 8",
                               timeout=TIMEOUT_MS)
        wait_text(page, "#upload-preview", "8 images, 8 labelled, 4 people")  # before indexing
        assert people[0].name in page.inner_text("#upload-preview")
        page.click("#index-btn")
        wait_text(page, "#index-report", "faces indexed from 8 files")
        wait_text(page, "#scoreboard", "CMCE ensemble")
        board = page.inner_text("#scoreboard")
        assert "8 labelled faces (4 people)" in board and "Recall@1" in board
        page.locator("#scoreboard").scroll_into_view_if_needed()
        assert in_view(page, page.locator("#scoreboard table")) and page.locator("#risk-plot").is_visible()
        shot(page, tmp_path, "layout_scoreboard")

        page.locator("#query-image input[type=file]").set_input_files(str(query))
        wait_text(page, "#results", f"query identity: {people[1].name}")
        idle(page)
        before = page.inner_text("#results")
        assert page.inner_text("#verdict-line").startswith("Verdict: CMCE ensemble ✓")

        faces = int(re.search(r"(\d+) faces", page.inner_text("#overview-summary")).group(1))
        shown = page.locator("#faces-image img").first  # the annotated photo, by its aliased URL
        shown.wait_for(state="attached", timeout=TIMEOUT_MS)
        fetched = page.evaluate("async u => { const r = await fetch(u); return [r.status, r.headers.get('content-type')] }",
                                shown.get_attribute("src"))
        assert fetched == [200, "image/webp"], fetched
        page.click("#download-btn")
        link = page.locator("#gallery-download a").first
        link.wait_for(timeout=TIMEOUT_MS)
        for url in (shown.get_attribute("src"), link.get_attribute("href")):  # no server folder in the page
            assert "/gradio_api/file=cmce-files-" in url and "/tmp/" not in url, url
        with page.expect_download() as got:
            link.click()
        archive = tmp_path / "my-gallery.zip"
        got.value.save_as(archive)
        page.click("#clear-btn")
        wait_text(page, "#index-report", "Gallery cleared")
        idle(page)
        page.locator("#restore-btn").evaluate("e => e.scrollIntoView()")
        page.locator("input[type=file][accept='.zip']").set_input_files(str(archive))
        wait_text(page, "#index-report", "faces restored")
        report = page.inner_text("#index-report")
        assert report.startswith(f"{faces} faces restored") and "no photo read again" in report, (faces, report)
        idle(page)
        page.click("#search-btn")
        idle(page)
        assert page.inner_text("#results") == before  # the same columns, matches and scores
        wait_text(page, "#scoreboard", board.splitlines()[0][:60])
        # a restored gallery holds no photo: a click on a match says so plainly, no image
        page.locator("#results section[data-view=ensemble] li.cmce-match").first.click()
        wait_text(page, "#match-note", "restored gallery")
        assert not page.locator("#match-photo img").is_visible()


# the picker's chosen line, wider than its box (an <input> never wraps: it would be cut)
PICKER_CUT = """() => { const e = document.querySelector('#bundle-picker input');
  return e.scrollWidth > e.clientWidth + 1 ? e.value : null; }"""
# the block label's box over the figure (the plot's own title is drawn at the figure's top)
LABEL_OVER_PLOT = """(id) => { const b = document.querySelector(id);
  const label = b.querySelector('label[data-testid=block-label]').getBoundingClientRect();
  const img = b.querySelector('.matplotlib img').getBoundingClientRect();
  return label.bottom > img.top + 1; }"""


def _green_pixels(png: Path) -> int:
    """Pixels of the match box's green (cmce.serve.display.result_view.MATCH_GREEN) in a screenshot:
    strongly green, whatever the scaling and compression did to the exact colour."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return int(((g > 140) & (g - np.maximum(r, b) > 70)).sum())


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_a_match_opens_in_its_photo_with_its_face_boxed_and_no_label_is_cut(app_server, tmp_path, size):
    viewport = DESKTOP if size == "desktop" else PHONE
    with open_page(app_server["url"], viewport) as page:
        assert page.evaluate(PICKER_CUT) is None, page.evaluate(PICKER_CUT)
        page.click("#bundle-picker input")
        options = page.locator("#bundle-picker [role=option]")
        options.first.wait_for(timeout=TIMEOUT_MS)
        cut = options.evaluate_all("els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)")
        assert cut == [] and options.count() >= 3
        shot(page, tmp_path, f"layout_{size}_picker_open")
        page.keyboard.press("Escape")
        assert "Switching keeps your gallery" in page.inner_text("#bundle-picker")  # the long line, wrapped, below

        page.locator("#example-galleries .thumbnail-item", has_text="Two pioneers").click()
        wait_text(page, "#index-report", "faces indexed from 5 files")
        idle(page)
        page.locator("#risk-plot .matplotlib img").wait_for(timeout=TIMEOUT_MS)
        assert not page.evaluate(LABEL_OVER_PLOT, "#risk-plot") and not page.evaluate(LABEL_OVER_PLOT, "#hist-plot")
        page.locator("#risk-plot").scroll_into_view_if_needed()
        shot_of(page.locator("#risk-plot"), tmp_path, f"layout_{size}_risk_plot")

        page.locator("#example-queries .thumbnail-item", has_text="Grace Hopper, dark").first.click()
        page.wait_for_selector("#verdict-line", timeout=TIMEOUT_MS)
        idle(page)
        top = page.locator("#results section[data-view=ensemble] li.cmce-match").first
        top.scroll_into_view_if_needed()
        top.click()
        wait_text(page, "#match-note", "face boxed in green")
        photo = page.locator("#match-photo img")
        photo.wait_for(state="visible", timeout=TIMEOUT_MS)
        page.wait_for_function("() => { const i = document.querySelector('#match-photo img'); "
                               "return i && i.complete && i.naturalWidth > 0; }", timeout=TIMEOUT_MS)
        idle(page)
        assert "Grace_Hopper" in page.inner_text("#match-note")
        photo.evaluate("e => e.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(300)
        assert in_view(page, photo), (photo.bounding_box(), page.viewport_size)
        png = shot_of(photo, tmp_path, f"layout_{size}_match_photo")
        assert _green_pixels(png) > 150  # the face box, drawn on the photo as shown
        shot(page, tmp_path, f"layout_{size}_match_photo_page")
