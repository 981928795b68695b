"""The validation dashboard, served for real and driven by a headless Chromium."""

from __future__ import annotations

import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from ecotaxa_core.db.models import AnnotationHistory, Object
from ecotaxa_core.users import get_user_by_email
from validation_project import make_validation_project

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/dashboard.png")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                       reason="needs Debian chromium at /usr/bin/chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _dashboard(settings):
    from dashboards.app import serve_dashboard

    port = _free_port()
    server = serve_dashboard(settings, port=port, address="127.0.0.1", threaded=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboard did not start on port {port}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.stop()


def _scores(page) -> list[float | None]:
    return [float(s) if s else None
            for s in page.locator(".et-thumb").evaluate_all("els => els.map(e => e.dataset.score)")]


def _choose(page, css_class: str, label_start: str) -> None:
    """Pick the option of a select widget whose label starts with ``label_start``."""
    select = page.locator(f".{css_class} select")
    labels = select.locator("option").all_text_contents()
    [label] = [lb for lb in labels if lb.lstrip("\u00a0").startswith(label_start)]
    select.select_option(label=label)


def _wait_thumbnails_loaded(page, timeout_s: float = 20) -> list[int]:
    images = page.locator(".et-thumb-img")
    deadline = time.monotonic() + timeout_s
    while True:
        widths = images.evaluate_all("els => els.map(e => e.complete ? e.naturalWidth : 0)")
        if widths and all(w > 0 for w in widths):
            return widths
        if time.monotonic() > deadline:
            raise AssertionError(f"thumbnails not loaded: natural widths {widths}")
        page.wait_for_timeout(100)


def test_validate_and_move_from_the_browser(sqlite_instance, ndsb_subset):
    from playwright.sync_api import expect, sync_playwright

    inst = sqlite_instance
    vp = make_validation_project(inst, ndsb_subset)
    copepods = [f"copepod_cyclopoid_oithona_eggs_{i}" for i in range(4)]  # scores .93 .81 .64 .33
    by_score = sorted(vp.scores.values(), key=lambda s: (s is None, -(s or 0)))

    with _dashboard(inst.settings) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            page.goto(url)

            # A wrong password is refused, the right one opens the page.
            page.locator(".et-email input").fill(ADMIN_EMAIL)
            page.locator(".et-password input").fill("not-the-password")
            page.locator(".et-sign-in button").click()
            expect(page.locator(".et-sign-in-error")).to_contain_text("wrong password")
            page.locator(".et-password input").fill(ADMIN_PASSWORD)
            page.locator(".et-sign-in button").click()

            tiles = page.locator(".et-thumb")
            expect(tiles).to_have_count(12)
            expect(page.locator(".et-user")).to_contain_text("Administrator")
            widths = _wait_thumbnails_loaded(page)
            assert len(widths) == 12
            assert _scores(page) == by_score  # score, high to low, unscored last

            _choose(page, "et-sort", "Score, low to high")
            expect(tiles.first).to_have_attribute("data-score", "0.21")
            assert _scores(page) == sorted(vp.scores.values(), key=lambda s: (s is None, s or 0))
            _choose(page, "et-sort", "Score, high to low")
            expect(tiles.first).to_have_attribute("data-score", "0.97")

            # Only the copepods, still by score.
            _choose(page, "et-filter-category", "Copepoda (")
            expect(tiles).to_have_count(4)
            assert tiles.evaluate_all("els => els.map(e => e.dataset.category)") == ["Copepoda"] * 4
            assert _scores(page) == [0.93, 0.81, 0.64, 0.33]

            def tile(orig_id: str):
                return page.locator(f'.et-thumb[data-object-id="{vp.objects[orig_id]}"]')

            # Select two, validate them.
            tile(copepods[0]).click()
            tile(copepods[1]).click()
            expect(page.locator(".et-thumb.et-selected")).to_have_count(2)
            expect(page.locator(".et-selected-count")).to_contain_text("2 selected")
            page.locator(".et-validate button").click()
            expect(page.locator(".et-message")).to_contain_text("2 objects validated")
            expect(tile(copepods[0])).to_have_attribute("data-status", "validated")
            expect(page.locator(".et-thumb.et-selected")).to_have_count(0)

            # Move one to another category with the type-ahead picker.
            tile(copepods[2]).click()
            expect(page.locator(".et-selected-count")).to_contain_text("1 selected")
            page.locator(".et-picker-host .et-picker-input").press_sequentially("chaeto", delay=30)
            option = page.locator(".et-picker-option", has_text="Chaetognatha")
            expect(option).to_have_count(1)
            option.click()
            expect(page.locator(".et-picker-host .et-picker-input")).to_have_value("Chaetognatha")
            page.locator(".et-move button").click()
            expect(page.locator(".et-message")).to_contain_text("1 object moved to Chaetognatha")
            expect(tiles).to_have_count(3)  # it left the Copepoda filter
            expect(page.locator(".et-picker-host .et-picker-input")).to_have_value("")

            # Keyboard: select one and press "d" for dubious.
            tile(copepods[3]).click()
            expect(page.locator(".et-selected-count")).to_contain_text("1 selected")
            page.keyboard.press("d")
            expect(page.locator(".et-message")).to_contain_text("1 object marked dubious")
            expect(tile(copepods[3])).to_have_attribute("data-status", "dubious")

            _choose(page, "et-filter-category", "All categories")
            expect(tiles).to_have_count(12)
            _wait_thumbnails_loaded(page)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()

    with inst.sessions() as s:
        admin = get_user_by_email(s, ADMIN_EMAIL)
        objects = {o.orig_id: o for o in s.scalars(select(Object).where(Object.project_id == vp.project_id))}
        history = {}
        for h in s.scalars(select(AnnotationHistory).order_by(AnnotationHistory.id)):
            history.setdefault(h.object_id, []).append(h)

    expected = {copepods[0]: ("validated", "Copepoda", 0.93), copepods[1]: ("validated", "Copepoda", 0.81),
                copepods[2]: ("validated", "Chaetognatha", 0.64), copepods[3]: ("dubious", "Copepoda", 0.33)}
    for orig, (status, category, previous_score) in expected.items():
        obj = objects[orig]
        assert (obj.status, obj.taxon_id, obj.annotator_id) == (status, vp.taxa[category], admin.id), orig
        assert obj.annotation_date is not None and obj.score is None
        [previous] = history[obj.id]
        assert (previous.status, previous.taxon_id, previous.score, previous.changed_by_id,
                previous.annotator_id) == ("predicted", vp.taxa["Copepoda"], previous_score, admin.id, None)
    untouched = {orig: obj for orig, obj in objects.items() if orig not in expected}
    assert {o.status for o in untouched.values()} == {"predicted", "unclassified"}
    assert all(o.annotator_id is None and o.id not in history for o in untouched.values())
    assert {orig: o.score for orig, o in untouched.items()} == {
        orig: vp.scores[orig] for orig in untouched}
