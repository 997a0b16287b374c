"""The app in a real browser (Playwright + Debian's chromium).

Uploads a folder gallery (one sub-folder per person, camera-style file names, so the
labels can only come from the folders), starts with nothing rejected (doubtful faces
marked), highlights rejected entries at a high rejection rate, runs a query of a known
person and one of a stranger, and keeps screenshots in ``tmp_path`` and ``/tmp/cmce_screens/``.

Needs ``pip install playwright`` and ``apt-get install chromium``; skipped otherwise.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import lfw_people

from cmce.method.bundle import load_bundle

from browser_page import LAPTOP, TIMEOUT_MS, idle, open_page, wait_text
from browser_page import pytestmark  # noqa: F401  (e2e; skipped without chromium or Playwright)
from browser_page import shot as _page_shot


def _shot(page, tmp_path: Path, name: str) -> Path:
    return _page_shot(page, tmp_path, name, full=True)


@pytest.fixture()
def gallery_folder(lfw_dir, tmp_path):
    people = lfw_people(lfw_dir, 5)
    root = tmp_path / "friends"
    for person in people[:4]:
        (root / person.name).mkdir(parents=True)
        for i, f in enumerate(sorted(person.glob("*.jpg"))[:2]):
            shutil.copy(f, root / person.name / f"IMG_{i + 1:04d}.jpg")
    return root, people


def test_gallery_rejection_and_search(app_server, gallery_folder, tmp_path):
    root, people = gallery_folder
    sessions_before = set(app_server["tmp"].glob("cmce-session-*"))
    with open_page(app_server["url"], LAPTOP) as page:

        # 1. A folder upload: labels come from the sub-folder names.
        page.locator("#gallery-folder input[type=file]").set_input_files(str(root))
        page.wait_for_function("document.querySelectorAll('#gallery-folder tr, #gallery-folder li').length >= 8",
                               timeout=TIMEOUT_MS)
        page.click("#index-btn")
        wait_text(page, "#index-report", "faces indexed from 8 files")
        assert "4 labelled people" in page.inner_text("#index-report")
        wait_text(page, "#overview-summary", "faces")
        for person in people[:4]:
            wait_text(page, "#overview", person.name[:8])
        assert "**0 rejected**" not in page.inner_text("#overview-summary")  # markdown rendered
        assert " 0 rejected" in page.inner_text("#overview-summary")  # the default rejects nothing
        assert page.locator("#reject-by input[value=none]").is_checked()

        # 2. A high rejection rate: some entries rejected and framed red, without re-indexing.
        page.locator("#reject-by").get_by_text("rate", exact=True).click()
        rate = page.locator("#reject-rate input[type=number]")
        rate.fill("0.3")
        rate.press("Enter")
        wait_text(page, "#overview", "rejected ·")
        idle(page)
        summary = page.inner_text("#overview-summary")
        assert " 0 rejected" not in summary and "rejected" in summary
        assert page.inner_text("#index-report").count("faces indexed") == 1  # no re-indexing
        _shot(page, tmp_path, "app_gallery_rejected")

        # 3. A known person: every view in its own column, the ensemble's top match right (green).
        page.locator("#reject-by").get_by_text("threshold", exact=True).click()
        wait_text(page, "#overview-summary", "faces")
        target = people[1]
        page.locator("#query-image input[type=file]").set_input_files(str(sorted(target.glob("*.jpg"))[2]))
        wait_text(page, "#results", f"query identity: {target.name}")
        columns = page.locator("#results section.cmce-view")
        views = [columns.nth(i).get_attribute("data-view") for i in range(columns.count())]
        assert views[0] == "ensemble" and views[-1] == "query" and len(views) >= 3
        ensemble = page.locator("#results section[data-view=ensemble]")
        first = ensemble.locator("li.cmce-match").first
        assert target.name in first.inner_text()
        assert "cmce-correct" in first.get_attribute("class")
        assert ensemble.locator(".cmce-members").count() >= 1  # per-member similarities
        boxes = page.locator("#results .cmce-view").evaluate_all(
            "els => els.map(e => e.getBoundingClientRect().top)")
        assert max(boxes) - min(boxes) < 5, "columns should sit side by side at 1366 px"
        idle(page)
        _shot(page, tmp_path, "app_search_known")

        # 3b. Another bundle through the picker: the gallery is kept (re-projected, no photo
        # read), the overview still shows every face, the results get the new bundle's columns.
        faces = int(re.search(r"(\d+) faces", page.inner_text("#overview-summary")).group(1))
        assert faces >= 8
        page.locator("#bundle-picker input").click()
        page.get_by_role("option", name=re.compile(r"^facenet-query")).click()
        wait_text(page, "#bundle-note", "re-projected into facenet-casia's space")
        wait_text(page, "#results", "facenet-casia")
        idle(page)
        note = page.inner_text("#bundle-note")
        assert f"Gallery of {faces} faces" in note and "0 photos re-read" in note
        assert f"{faces} faces" in page.inner_text("#overview-summary")
        for person in people[:4]:
            assert person.name[:8] in page.inner_text("#overview")
        assert page.locator("#overview .thumbnail-item").count() == faces
        views = page.locator("#results section.cmce-view").evaluate_all(
            "els => els.map(e => e.getAttribute('data-view'))")
        assert "sface" in views and views[0] == "ensemble", views
        first = page.locator("#results section[data-view=ensemble] li.cmce-match").first
        assert target.name in first.inner_text()
        assert "facenet-query" in page.locator("#bundle-picker input").input_value()
        assert page.inner_text("#index-report").count("faces indexed") == 1  # nothing re-indexed
        _shot(page, tmp_path, "app_bundle_switched")
        page.locator("#bundle-picker input").click()
        page.get_by_role("option", name=re.compile(r"^sface-query")).click()
        wait_text(page, "#bundle-note", "re-projected into sface's space")
        idle(page)

        # 4. A stranger (not in the gallery): the ensemble answers "unknown".
        stranger = people[4]
        page.locator("#query-image input[type=file]").set_input_files(str(sorted(stranger.glob("*.jpg"))[0]))
        wait_text(page, "#results", f"query identity: {stranger.name}")
        ensemble = page.locator("#results section[data-view=ensemble]")
        assert "cmce-unknown" in ensemble.get_attribute("class")
        verdict = ensemble.locator(".cmce-verdict")
        assert "Unknown" in verdict.inner_text() and "false-accept rate" in verdict.inner_text()
        assert "cmce-correct" in verdict.get_attribute("class")  # right: the person is not in the gallery
        idle(page)
        page.locator("#results").scroll_into_view_if_needed()
        _shot(page, tmp_path, "app_search_unknown")

        # 5. The laptop viewport as a user first sees the results.
        _page_shot(page, tmp_path, "app_viewport")

        # 6. Closing the tab drops the session and its temporary folder.
        ours = set(app_server["tmp"].glob("cmce-session-*")) - sessions_before
        assert len(ours) == 1
        browser = page.context.browser
        page.close()
        waiter = browser.new_page()
        for _ in range(60):
            if not any(d.exists() for d in ours):
                break
            waiter.wait_for_timeout(500)
        assert not any(d.exists() for d in ours), "session folder left after the tab closed"


def test_one_click_examples(app_server, tmp_path):
    with open_page(app_server["url"], LAPTOP) as page:
        page.locator("button", has_text="Two pioneers, clean (5 photos)").first.click()
        wait_text(page, "#index-report", "faces indexed from 5 files")
        assert "coffee_no_face.jpg" in page.inner_text("#index-report")  # the skip report
        page.get_by_text("two faces: pick one").first.click()
        wait_text(page, "#results", "face 1 of 2")
        top = page.locator("#results section[data-view=ensemble] li.cmce-match").first
        assert "Grace_Hopper" in top.inner_text()
        page.locator("#face-choice input").click()
        page.get_by_role("option", name="face 2").click()
        wait_text(page, "#results", "face 2 of 2")
        assert "Eileen_Collins" in top.inner_text()
        page.wait_for_selector("#risk-plot img, #risk-plot svg, #risk-plot canvas", timeout=TIMEOUT_MS)
        idle(page)
        _shot(page, tmp_path, "app_examples")
        page.get_by_text("Model bundle").click()
        wait_text(page, "body", "licence")
        _page_shot(page, tmp_path, "app_bundle")

        # The example gallery on another bundle: the saved copy is re-projected, not re-indexed.
        page.locator("#bundle-picker input").click()
        page.get_by_role("option", name=re.compile(r"^facenet-query")).click()
        wait_text(page, "#bundle-note", "re-projected into facenet-casia's space")
        idle(page)
        page.click("#clear-btn")  # so that the report below is the new one
        wait_text(page, "#index-report", "Gallery cleared")
        page.locator("button", has_text="Two pioneers, clean (5 photos)").first.click()
        wait_text(page, "#index-report", "faces indexed from 5 files")
        idle(page)
        assert page.locator("#results section[data-view=sface]").count() == 1  # searched again: new columns
        assert "Eileen_Collins" in top.inner_text()  # still face 2 of the two-faces photo
        assert "◐" not in page.inner_text("#overview")  # the same three backbones: nothing lacking

        # The upgrade story: a gallery indexed with the old facenet-dlib bundle (two backbones),
        # then served by sface-query: every face lacks sface's own embedding (◐ 2/3 models).
        if (app_server["bundle"].parent / "facenet-dlib" / "config.json").is_file():
            page.locator("#bundle-picker input").click()
            page.get_by_role("option", name=re.compile(r"^facenet-dlib")).click()
            wait_text(page, "#bundle-note", "re-projected into facenet-casia's space")
            idle(page)
            page.click("#clear-btn")
            wait_text(page, "#index-report", "Gallery cleared")
            # indexed again, by facenet-dlib's two models
            page.locator("button", has_text="Two pioneers, clean (5 photos)").first.click()
            wait_text(page, "#index-report", "faces indexed from 5 files")
            idle(page)
            page.locator("#bundle-picker input").click()
            page.get_by_role("option", name=re.compile(r"^sface-query")).click()
            wait_text(page, "#bundle-note", "lack sface's own embedding (◐)")
            wait_text(page, "#overview", "◐ 2/3 models")
            idle(page)
            assert "lack a model" in page.inner_text("#overview-summary")
            assert "no gallery face has sface's embedding" in page.inner_text("#results section[data-view=query]")
            wait_text(page, "body", "every face here was indexed before this bundle")  # the plot's note
            _shot(page, tmp_path, "app_upgraded_gallery")


def test_story_and_a_bundle_example_in_one_click(app_server, tmp_path):
    """The measured story is on the page (read from the shipped evaluations), and one click on
    facenet-query's example switches the bundle, loads the mixed-quality archive and searches:
    the ensemble finds her while the weak query model alone says unknown."""
    from cmce.serve.story import load_examples, order_by_lift, read_evaluations

    root = Path(__file__).resolve().parents[2]
    reports = read_evaluations(root / "docs")
    shipped = [p.name for p in (root / "assets" / "bundles").glob("*") if (p / "config.json").is_file()]
    manifest = load_examples(root / "assets" / "examples")
    examples = manifest.by_bundle.get("facenet-query")
    if not reports or not examples or "facenet-query" not in shipped:
        pytest.skip("needs the shipped facenet-query bundle, its evaluation and its examples")
    first = order_by_lift(shipped, reports)[0]
    with open_page(app_server["url"], LAPTOP) as page:
        story = page.locator("#story")
        assert "How to read the columns" not in story.inner_text()  # collapsed, below the task
        story.get_by_text("What the ensemble buys").first.click()
        wait_text(page, "#story", "How to read the columns")
        assert first in story.get_by_role("tab", selected=True).inner_text()
        ensemble = next(r for r in reports if r.bundle == first).column("ensemble")
        assert f"{100 * ensemble.recall_at_1:.1f}" in story.locator("table").first.inner_text()
        assert story.locator("img").count() >= 1  # the risk-coverage plot
        _shot(page, tmp_path, "app_story")

        if first != "facenet-query":  # it leads while its ensemble's lift is the largest
            story.get_by_role("tab", name=re.compile(r"^facenet-query")).click()
        example = examples[0]
        page.get_by_role("button", name=manifest.label(example)).first.click()
        person = example.query.stem.rsplit("_", 1)[0]
        wait_text(page, "#results", f"query identity: {person}")
        idle(page)
        assert "facenet-query" in page.locator("#bundle-picker input").input_value()
        photos = len(list(manifest.gallery(example.gallery).folder.glob("*.jpg")))
        assert f"faces indexed from {photos} files" in page.inner_text("#index-report")
        top = page.locator("#results section[data-view=ensemble] li.cmce-match").first
        assert person in top.inner_text() and "cmce-correct" in top.get_attribute("class")
        # a single model's column (a gallery model through its transformer) says unknown or is wrong
        singles = page.locator("#results section.cmce-view")
        missed = []
        for i in range(singles.count()):
            col = singles.nth(i)
            if col.get_attribute("data-view") in ("ensemble", "query"):
                continue
            first_match = col.locator("li.cmce-match").first
            if "cmce-unknown" in col.get_attribute("class") or (
                    first_match.count() and "cmce-wrong" in first_match.get_attribute("class")):
                missed.append(col.get_attribute("data-view"))
        assert missed, "every single-model column found her: the example no longer makes its point"
        shipped = load_bundle(root / "assets" / "bundles" / "facenet-query").calibration.quality
        summary = page.inner_text("#overview-summary")
        # the all-degraded archive: nothing rejected by default, its doubtful faces listed with their score
        assert "Eileen_Collins_15.jpg" in summary and shipped.description in summary and " 0 rejected" in summary
        wait_text(page, "#overview", "◌ doubtful ·")
        _shot(page, tmp_path, "app_story_example")
        page.locator("#results").scroll_into_view_if_needed()
        _page_shot(page, tmp_path, "app_story_columns")


def test_results_follow_the_rejection_controls_and_the_gallery(app_server, tmp_path):
    """Issue 24: results never outlive the state they were computed in. A threshold that rejects every
    face re-runs the search (the old match disappears; the column says every photo of her is rejected,
    not that she is absent), the help under the box follows the typed value, and "Clear gallery"
    clears the results."""
    query = Path(__file__).resolve().parents[2] / "assets" / "examples" / "queries" / "Eileen_Collins_04.jpg"
    with open_page(app_server["url"], LAPTOP) as page:
        page.locator("button", has_text="Two pioneers, clean (5 photos)").first.click()
        wait_text(page, "#index-report", "faces indexed from 5 files")
        idle(page)
        page.locator("#query-image input[type=file]").set_input_files(str(query))
        wait_text(page, "#results", "query identity: Eileen_Collins")
        idle(page)
        ensemble = page.locator("#results section[data-view=ensemble]")
        top = ensemble.locator("li.cmce-match").first
        assert "Eileen_Collins" in top.inner_text() and "cmce-correct" in top.get_attribute("class")
        assert "red, solid: someone else" in page.inner_text("#results")  # the legend
        _shot(page, tmp_path, "app_state_before")

        # every face rejected: a threshold at the bottom of the score's range
        box = page.locator("#reject-threshold input[type=number]")
        box.fill("0")
        box.press("Enter")
        wait_text(page, "#results", "every photo of them here is rejected")
        idle(page)
        assert page.locator("#reject-by input[value=threshold]").is_checked()
        assert ensemble.locator("li.cmce-match").count() == 0, "a rejected face is still shown as a match"
        assert "Eileen_Collins ✓" not in page.inner_text("#results")
        assert "not in the gallery" not in page.inner_text("#results")
        assert "This box: 0" in page.inner_text("#reject-threshold")  # the help follows the value
        assert "⊘ purple frame" in page.inner_text("#overview-summary")
        _shot(page, tmp_path, "app_state_all_rejected")

        # an out-of-range threshold is refused visibly, and the results say so
        box.fill("5")
        box.press("Enter")
        wait_text(page, "#results", "threshold must be from 0 to")
        idle(page)
        assert "not used" in page.inner_text("#reject-threshold")

        # nothing rejected again: she is found; then the gallery cleared: the results go
        page.locator("#reject-by").get_by_text("none (mark doubtful faces)", exact=True).click()
        wait_text(page, "#results", "query identity: Eileen_Collins")
        idle(page)
        assert "Eileen_Collins" in ensemble.locator("li.cmce-match").first.inner_text()
        page.click("#clear-btn")
        wait_text(page, "#index-report", "Gallery cleared")
        idle(page)
        assert page.locator("#results li.cmce-match").count() == 0, "results of the cleared gallery still shown"
        assert "Eileen_Collins" not in page.inner_text("#results")
        _shot(page, tmp_path, "app_state_cleared")
