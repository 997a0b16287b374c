"""Chromium on the app, for the browser tests (Playwright driving Debian's chromium).

One place for what every browser test needs: the browser's arguments, a page opened on the app
once its controls are there, waits (text shown, no event running) and screenshots kept in the
test's ``tmp_path`` and in ``/tmp/cmce_screens/`` to be looked at. A module that imports this
skips when chromium or Playwright is missing (``pytestmark``: strict CI turns a skip into a
failure).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")]
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENS = Path("/tmp/cmce_screens")
TIMEOUT_MS = 180_000
DESKTOP, PHONE, LAPTOP = {"width": 1400, "height": 900}, {"width": 390, "height": 844}, {"width": 1366, "height": 768}


@contextlib.contextmanager
def open_page(url: str, viewport: dict = DESKTOP, downloads: bool = False) -> Iterator:
    """A chromium page of ``viewport`` size on the app, once its controls are there; closed afterwards."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport=viewport, accept_downloads=downloads)
            page.goto(url)
            page.wait_for_selector("#index-btn", timeout=TIMEOUT_MS)
            page.wait_for_timeout(1000)
            yield page
        finally:
            browser.close()


def shot(page, tmp_path: Path, name: str, full: bool = False) -> Path:
    """A screenshot ``name.png`` of the page (``full``: all of it) in ``tmp_path``, kept in ``/tmp/cmce_screens/``."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return keep(path)


def shot_of(locator, tmp_path: Path, name: str) -> Path:
    """A screenshot ``name.png`` of one element in ``tmp_path``, kept in ``/tmp/cmce_screens/``."""
    path = tmp_path / f"{name}.png"
    locator.screenshot(path=str(path))
    return keep(path)


def keep(path: Path) -> Path:
    """``path`` copied to ``/tmp/cmce_screens/`` to be looked at after the run; ``path`` itself."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / path.name)
    return path


def wait_text(page, selector: str, text: str, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until the element of ``selector`` shows ``text``; on a timeout say what it showed."""
    try:
        page.wait_for_function(
            "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
            arg=[selector, text], timeout=timeout_ms,
        )
    except sync_api.TimeoutError as e:
        shown = page.evaluate("(s) => { const e = document.querySelector(s); return e ? e.innerText : null; }",
                              selector)
        raise AssertionError(f"{selector} did not show {text!r} within {timeout_ms / 1000:.0f} s; "
                             f"it shows {shown!r}") from e


def idle(page) -> None:
    """Wait until no event is running (every Gradio status tracker hidden), and let transitions settle."""
    page.wait_for_timeout(500)
    page.wait_for_function(
        "Array.from(document.querySelectorAll('[data-testid=status-tracker]'))"
        ".every(e => e.classList.contains('hide'))",
        timeout=TIMEOUT_MS,
    )
    page.wait_for_timeout(500)


def in_view(page, locator) -> bool:
    """The element's box lies wholly inside the viewport as it is scrolled now."""
    box = locator.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["x"] >= 0 and box["y"] + box["height"] <= size["height"] \
        and box["x"] + box["width"] <= size["width"] + 1
