"""The app in a real browser (Playwright + Debian's chromium).

Uploads a folder gallery (one sub-folder per person, camera-style file names, so the
labels can only come from the folders), highlights rejected entries at a high
rejection rate, runs a query of a known person and one of a stranger, and keeps
screenshots in ``tmp_path`` and ``/tmp/cmce_screens/``.

Needs ``pip install playwright`` and ``apt-get install chromium``; skipped otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import lfw_people

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENS = Path("/tmp/cmce_screens")
TIMEOUT_MS = 180_000


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / path.name)
    return path


def _wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text], timeout=TIMEOUT_MS,
    )


def _idle(page) -> None:
    """Wait until no event is running (every Gradio status tracker hidden)."""
    page.wait_for_timeout(500)
    page.wait_for_function(
        "Array.from(document.querySelectorAll('[data-testid=status-tracker]'))"
        ".every(e => e.classList.contains('hide'))",
        timeout=TIMEOUT_MS,
    )
    page.wait_for_timeout(500)  # let transitions settle before a screenshot


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
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            sessions_before = set(app_server["tmp"].glob("cmce-session-*"))
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(app_server["url"])
            page.wait_for_selector("#index-btn", timeout=TIMEOUT_MS)

            # 1. A folder upload: labels come from the sub-folder names.
            page.locator("#gallery-folder input[type=file]").set_input_files(str(root))
            page.wait_for_function("document.querySelectorAll('#gallery-folder tr, #gallery-folder li').length >= 8",
                                   timeout=TIMEOUT_MS)
            page.click("#index-btn")
            _wait_text(page, "#index-report", "faces indexed from 8 files")
            assert "4 labelled people" in page.inner_text("#index-report")
            _wait_text(page, "#overview-summary", "faces")
            for person in people[:4]:
                _wait_text(page, "#overview", person.name[:8])

            # 2. A high rejection rate: some entries rejected and framed red, without re-indexing.
            page.locator("#reject-by").get_by_text("rate").click()
            rate = page.locator("#reject-rate input[type=number]")
            rate.fill("0.3")
            rate.press("Enter")
            _wait_text(page, "#overview", "rejected ·")
            _idle(page)
            summary = page.inner_text("#overview-summary")
            assert " 0 rejected" not in summary and "rejected" in summary
            assert page.inner_text("#index-report").count("faces indexed") == 1  # no re-indexing
            _shot(page, tmp_path, "app_gallery_rejected")

            # 3. A known person: every view in its own column, the ensemble's top match right (green).
            page.locator("#reject-by").get_by_text("threshold").click()
            _wait_text(page, "#overview-summary", "faces")
            target = people[1]
            page.locator("#query-image input[type=file]").set_input_files(str(sorted(target.glob("*.jpg"))[2]))
            _wait_text(page, "#results", f"query identity: {target.name}")
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
            _idle(page)
            _shot(page, tmp_path, "app_search_known")

            # 4. A stranger (not in the gallery): the ensemble answers "unknown".
            stranger = people[4]
            page.locator("#query-image input[type=file]").set_input_files(str(sorted(stranger.glob("*.jpg"))[0]))
            _wait_text(page, "#results", f"query identity: {stranger.name}")
            ensemble = page.locator("#results section[data-view=ensemble]")
            assert "cmce-unknown" in ensemble.get_attribute("class")
            verdict = ensemble.locator(".cmce-verdict")
            assert "Unknown" in verdict.inner_text() and "false-accept rate" in verdict.inner_text()
            assert "cmce-correct" in verdict.get_attribute("class")  # right: the person is not in the gallery
            _idle(page)
            page.locator("#results").scroll_into_view_if_needed()
            _shot(page, tmp_path, "app_search_unknown")

            # 5. The laptop viewport as a user first sees the results.
            page.screenshot(path=str(tmp_path / "app_viewport.png"))
            shutil.copy(tmp_path / "app_viewport.png", SCREENS / "app_viewport.png")

            # 6. Closing the tab drops the session and its temporary folder.
            ours = set(app_server["tmp"].glob("cmce-session-*")) - sessions_before
            assert len(ours) == 1
            page.close()
            waiter = browser.new_page()
            for _ in range(60):
                if not any(d.exists() for d in ours):
                    break
                waiter.wait_for_timeout(500)
            assert not any(d.exists() for d in ours), "session folder left after the tab closed"
        finally:
            browser.close()


def test_one_click_examples(app_server, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(app_server["url"])
            page.wait_for_selector("#index-btn", timeout=TIMEOUT_MS)
            page.get_by_text("Two pioneers").first.click()
            _wait_text(page, "#index-report", "faces indexed from 7 files")
            assert "coffee_no_face.jpg" in page.inner_text("#index-report")  # the skip report
            page.get_by_text("two faces: pick one").first.click()
            _wait_text(page, "#results", "face 1 of 2")
            top = page.locator("#results section[data-view=ensemble] li.cmce-match").first
            assert "Grace_Hopper" in top.inner_text()
            page.locator("#face-choice input").click()
            page.get_by_role("option", name="face 2").click()
            _wait_text(page, "#results", "face 2 of 2")
            assert "Eileen_Collins" in top.inner_text()
            page.wait_for_selector("#risk-plot img, #risk-plot svg, #risk-plot canvas", timeout=TIMEOUT_MS)
            _idle(page)
            _shot(page, tmp_path, "app_examples")
            page.get_by_text("Model bundle").click()
            _wait_text(page, "body", "licence")
            page.screenshot(path=str(tmp_path / "app_bundle.png"))
            shutil.copy(tmp_path / "app_bundle.png", SCREENS / "app_bundle.png")
        finally:
            browser.close()
