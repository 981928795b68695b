"""The validation page from the keyboard, with undo, the category tree, similarity, stale
tiles and a visitor: served for real, driven by a headless Chromium, checked in the database."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from ecotaxa_core.annotation import set_dubious
from ecotaxa_core.db.models import AnnotationHistory, Image, Object, Role
from ecotaxa_core.projects import set_member
from ecotaxa_core.users import create_user
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, _dashboard, _wait_thumbnails_loaded
from validation_project import make_validation_project

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]


@pytest.fixture
def project(sqlite_instance, ndsb_subset):
    """The 12-object project, an annotator, a second annotator, a visitor, and per-object
    vectors made from the real images (8x8 grey levels) as the similarity features."""
    inst = sqlite_instance
    vp = make_validation_project(inst, ndsb_subset)
    with inst.sessions.begin() as s:
        users = {name: create_user(s, f"{name}@example.org", name.capitalize(), "secret-pw")
                 for name in ("ann", "bob", "vis")}
        s.flush()
        for name, role in (("ann", Role.ANNOTATOR), ("bob", Role.ANNOTATOR), ("vis", Role.VISITOR)):
            set_member(s, vp.project_id, users[name].id, role)
        users = {name: u.id for name, u in users.items()}
        paths = dict(s.execute(select(Image.object_id, Image.file_path)
                               .where(Image.object_id.in_(list(vp.objects.values())))).all())
    ids = sorted(paths)
    vectors = []
    for i in ids:
        with PILImage.open(inst.vault.root / paths[i]) as im:
            vectors.append(np.asarray(im.convert("L").resize((8, 8)), dtype=np.float32).ravel())
    inst.features.append(vp.project_id, "deep_greylevels", ids, np.stack(vectors),
                         [f"g{k}" for k in range(64)], producer={"kind": "test"})
    return inst, vp, users


def _sign_in(page, url: str, email: str) -> None:
    page.goto(url)
    page.locator(".et-email input").fill(email)
    page.locator(".et-password input").fill("secret-pw")
    page.locator(".et-sign-in button").click()
    page.locator(".et-thumb").first.wait_for()


@contextmanager
def _signed_in(inst, email: str, width: int = 1500):
    """A page of the served dashboard, signed in as ``email`` (password secret-pw)."""
    from playwright.sync_api import sync_playwright

    with _dashboard(inst.settings) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.set_default_timeout(20_000)
            _sign_in(page, url, email)
            yield page
        finally:
            browser.close()


def _states(inst, vp) -> dict[str, tuple]:
    with inst.sessions() as s:
        return {o.orig_id: (o.status, o.taxon_id, o.annotator_id)
                for o in s.scalars(select(Object).where(Object.project_id == vp.project_id))}


def _tile(page, vp, orig_id: str):
    return page.locator(f'.et-thumb[data-object-id="{vp.objects[orig_id]}"]')


def test_keyboard_validation_undo_tree_similarity_and_stale_tiles(project):
    from playwright.sync_api import expect

    inst, vp, users = project
    copepods = [f"copepod_cyclopoid_oithona_eggs_{i}" for i in range(4)]
    before = _states(inst, vp)
    with _signed_in(inst, "ann@example.org", width=1500) as page:
        tiles = page.locator(".et-thumb")
        expect(tiles).to_have_count(12)
        message = page.locator(".et-message")

        # "?" shows the keys over the page, "?" again hides them.
        page.keyboard.press("?")
        expect(page.locator(".et-help-overlay")).to_be_visible()
        expect(page.locator(".et-help-overlay")).to_contain_text("validate the whole page")
        page.keyboard.press("?")
        expect(page.locator(".et-help-overlay")).to_be_hidden()

        # The tree: Biota holds the three categories; a click filters on Copepoda.
        expect(page.locator(".et-tree-node")).to_have_count(4)
        expect(page.locator(".et-tree-node", has_text="Biota")).to_contain_text("10")
        page.locator(".et-tree-node", has_text="Copepoda").click()
        expect(tiles).to_have_count(4)
        assert "category=" in page.url  # the view is in the address, to share

        # Keyboard only: Shift+V validates the page.
        page.keyboard.press("Shift+V")
        expect(message).to_contain_text("4 objects validated")
        after = _states(inst, vp)
        assert all(after[o] == ("validated", vp.taxa["Copepoda"], users["ann"]) for o in copepods)

        # u undoes it: the four are predicted again, unannotated.
        page.keyboard.press("u")
        expect(message).to_contain_text("Undone: 4 objects back as before")
        assert _states(inst, vp) == before

        # Move one from the keyboard: m, type, Enter picks, Enter moves. Ctrl+Z undoes.
        _tile(page, vp, copepods[0]).click()
        expect(page.locator(".et-detail")).to_contain_text("Top predictions")
        page.keyboard.press("m")
        page.keyboard.type("chaeto", delay=30)
        expect(page.locator(".et-picker-option", has_text="Chaetognatha")).to_have_count(1)
        page.keyboard.press("Enter")
        expect(page.locator(".et-picker-host .et-picker-input")).to_have_value("Chaetognatha")
        page.keyboard.press("Enter")
        expect(message).to_contain_text("1 object moved to Chaetognatha")
        assert _states(inst, vp)[copepods[0]] == ("validated", vp.taxa["Chaetognatha"],
                                                  users["ann"])
        expect(tiles).to_have_count(3)
        page.locator(".et-grid-host .et-grid").click(position={"x": 5, "y": 5})  # focus out of the picker
        page.keyboard.press("Control+z")
        expect(message).to_contain_text("Undone: 1 object")
        expect(tiles).to_have_count(4)
        assert _states(inst, vp) == before

        # The detail of one object lists its history (the move and its undo).
        _tile(page, vp, copepods[0]).click()
        expect(page.locator(".et-detail .et-history-row")).to_have_count(2)
        expect(page.locator(".et-detail")).to_contain_text("(undo)")

        # s: every object, most similar to the selected one first (itself first).
        page.locator(".et-tree-node", has_text="Biota").click()
        expect(tiles).to_have_count(10)
        page.keyboard.press("n")
        expect(page.locator(".et-thumb.et-selected")).to_have_count(0)
        _tile(page, vp, copepods[0]).click()
        expect(page.locator(".et-selected-count")).to_contain_text("1 selected")
        page.keyboard.press("s")
        expect(page.locator(".et-sort select")).to_have_value("Most similar to the chosen object")
        expect(tiles.first).to_have_attribute("data-object-id", str(vp.objects[copepods[0]]))

        # Someone else marks a shown object dubious: the tile shows it within seconds.
        shown = int(tiles.nth(2).get_attribute("data-object-id"))
        with inst.sessions.begin() as s:
            set_dubious(s, vp.project_id, [shown], users["bob"])
        expect(page.locator(f'.et-thumb[data-object-id="{shown}"]')).to_have_attribute(
            "data-status", "dubious", timeout=15_000)
        expect(message).to_contain_text("changed by someone else")
        _wait_thumbnails_loaded(page)
    with inst.sessions() as s:
        undo_rows = s.scalar(select(func.count()).select_from(AnnotationHistory)
                             .where(AnnotationHistory.action == "undo"))
    assert undo_rows == 5  # four, then one


def test_a_visitor_is_refused_annotation(project):
    from playwright.sync_api import expect

    inst, vp, users = project
    before = _states(inst, vp)
    with _signed_in(inst, "vis@example.org", width=1400) as page:
        expect(page.locator(".et-thumb")).to_have_count(12)
        for css in ("et-validate", "et-dubious", "et-move", "et-validate-page", "et-undo"):
            expect(page.locator(f".{css} button")).to_be_disabled()
        page.locator(".et-thumb").first.click()
        expect(page.locator(".et-selected-count")).to_contain_text("1 selected")
        page.keyboard.press("v")
        expect(page.locator(".et-message")).to_contain_text("may not annotate")
        page.keyboard.press("Shift+V")
        page.keyboard.press("u")
        expect(page.locator(".et-message")).to_contain_text("may not annotate")
    assert _states(inst, vp) == before
    with inst.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AnnotationHistory)) == 0


def test_the_project_tab_plots_the_counts_and_refuses_an_annotator_training(project):
    from playwright.sync_api import expect

    inst, vp, users = project
    with _signed_in(inst, "ann@example.org", width=1500) as page:
        page.locator(".bk-tab", has_text="All projects").click()
        expect(page.locator(".et-project-row")).to_contain_text(
            "12 objects, 0.0 % validated, 83.3 % predicted · you are annotator")
        page.locator(".et-open-project button").click()  # back to the grid of that project
        expect(page.locator(".et-thumb")).to_have_count(12)
        page.locator(".bk-tab", has_text="Project").first.click()
        expect(page.locator(".et-project-head")).to_contain_text(
            "12 objects: 0 validated (0.0 %), 10 predicted (83.3 %)")
        expect(page.locator("canvas").first).to_be_visible()  # the Bokeh plots
        assert page.locator("canvas").count() >= 3
        expect(page.locator(".et-models")).to_contain_text("No training yet")
        page.locator(".et-start-train button").click()
        expect(page.locator(".et-project-message")).to_contain_text(
            "train not started: ann@example.org may not import project")


def test_batch_classification_with_a_lasso_on_the_map(project):
    from playwright.sync_api import expect

    inst, vp, users = project
    with _signed_in(inst, "ann@example.org", width=1500) as page:
        page.locator(".bk-tab", has_text="Batch").click()
        page.locator(".et-batch-load button").click()
        expect(page.locator(".et-batch-message")).to_contain_text("12 objects on the map")
        count = page.locator(".et-batch-count")
        for _attempt in range(5):  # the points may reach the canvas after the message
            page.wait_for_timeout(500)
            _lasso_around_the_plot(page)
            page.wait_for_timeout(500)
            if "12 marked" in count.inner_text():
                break
        expect(count).to_contain_text("12 marked")
        expect(page.locator(".et-batch-grid .et-thumb")).to_have_count(12)
        page.locator(".et-batch-invert button").click()
        expect(page.locator(".et-batch-count")).to_contain_text("0 marked")
        page.locator(".et-batch-invert button").click()
        expect(page.locator(".et-batch-count")).to_contain_text("12 marked")
        first = page.locator(".et-batch-grid .et-thumb").first
        unmarked = int(first.get_attribute("data-object-id"))
        first.click()  # unmark one
        expect(page.locator(".et-batch-count")).to_contain_text("11 marked")
        page.locator(".et-batch-picker .et-picker-input").press_sequentially("bacil", delay=30)
        page.locator(".et-picker-option", has_text="Bacillariophyta").first.click()
        page.locator(".et-batch-classify button").click()
        expect(page.locator(".et-batch-message")).to_contain_text(
            "11 objects classified as Bacillariophyta")
        expect(page.locator(".et-batch-message")).to_contain_text("hidden")
    states = _states(inst, vp)
    diatoms = vp.taxa["Bacillariophyta"]
    unmarked_orig = next(o for o, i in vp.objects.items() if i == unmarked)
    assert all(v == ("validated", diatoms, users["ann"])
               for o, v in states.items() if o != unmarked_orig)
    assert states[unmarked_orig][0] in ("predicted", "unclassified")


def _lasso_around_the_plot(page) -> None:
    """A lasso drawn along the inside of the map's borders: every point."""
    box = page.locator("canvas").last.bounding_box()
    x0, y0 = box["x"] + 40, box["y"] + 40
    x1, y1 = box["x"] + box["width"] - 10, box["y"] + box["height"] - 30
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def test_the_action_menu_asks_before_it_acts_and_the_core_refuses_an_annotator(project):
    from playwright.sync_api import expect

    inst, vp, users = project
    before = _states(inst, vp)
    with _signed_in(inst, "ann@example.org", width=1500) as page:
        page.locator(".et-action-menu button").first.click()
        page.get_by_text("Delete them").click()
        expect(page.locator(".et-action-question")).to_contain_text(
            "this will delete 12 objects")
        page.locator(".et-action-cancel button").click()
        expect(page.locator(".et-action-message")).to_contain_text("Nothing done")
        page.locator(".et-action-menu button").first.click()
        page.get_by_text("Reset the validated ones to predicted").click()
        expect(page.locator(".et-action-question")).to_contain_text(
            "send 0 validated objects back")
        page.locator(".et-action-confirm button").click()
        expect(page.locator(".et-action-message")).to_contain_text(
            "Not done: ann@example.org may not manage project")
    assert _states(inst, vp) == before


def test_zoom_scale_bars_and_drag_selection(project):
    """Images are drawn at the zoom's share of their own size, with a scale bar from the
    project's pixel size; dragging a rectangle selects the tiles it touches."""
    from playwright.sync_api import expect

    from ecotaxa_core.db.models import Project, Sample

    inst, vp, users = project
    with inst.sessions.begin() as s:
        s.get(Project, vp.project_id).pixel_size_um = 10.0
        stations = [Sample(project_id=vp.project_id, orig_id=f"st{k}", lat=43.2 + k / 10,
                           lon=7.3 + k / 10) for k in range(3)]
        s.add_all(stations)
        s.flush()
        for k, obj in enumerate(s.scalars(select(Object).where(
                Object.project_id == vp.project_id).order_by(Object.id))):
            obj.sample_id = stations[k % 3].id
        sizes = {oid: (w, h) for oid, w, h in s.execute(
            select(Image.object_id, Image.width, Image.height).where(Image.rank == 0))}

    def shown(tile) -> tuple[float, float, float]:
        """(drawn image width, its scale, the scale bar's µm per screen pixel)"""
        img, bar = tile.locator(".et-thumb-img"), tile.locator(".et-scale-bar")
        width = float(img.evaluate("e => e.getBoundingClientRect().width"))
        scale = float(img.get_attribute("data-scale"))
        bar_um = float(bar.get_attribute("data-um"))
        bar_px = float(bar.evaluate("e => e.getBoundingClientRect().width"))
        return width, scale, bar_um / bar_px

    before = _states(inst, vp)
    with _signed_in(inst, "ann@example.org", width=1500) as page:
        tiles = page.locator(".et-thumb")
        expect(tiles).to_have_count(12)
        expect(page.locator(".et-scale-bar")).to_have_count(12)
        small = None
        for k in range(12):
            tile = tiles.nth(k)
            w, h = sizes[int(tile.get_attribute("data-object-id"))]
            width, scale, um_per_px = shown(tile)
            assert scale == pytest.approx(min(1.0, 132 / w, 132 / h))  # 100 %, shrunk to fit
            assert width == pytest.approx(w * scale, abs=1)
            assert um_per_px == pytest.approx(10.0 / scale, rel=0.05)  # the bar is true
            if max(w, h) <= 66 and small is None:
                small = (k, width)
        assert small is not None, "the sample has small images"

        page.keyboard.press("+")  # 200 %: small images twice as large
        expect(page.locator(".et-zoom select")).to_have_value("200 %")
        tile = tiles.nth(small[0])
        page.wait_for_function("([el, w]) => el.getBoundingClientRect().width > 1.5 * w",
                               arg=[tile.locator(".et-thumb-img").element_handle(), small[1]])
        width, scale, um_per_px = shown(tile)
        assert (scale, width) == (pytest.approx(2.0), pytest.approx(2 * small[1], abs=1))
        assert um_per_px == pytest.approx(5.0, rel=0.05)
        assert "zoom=200" in page.url
        page.keyboard.press("-")
        page.keyboard.press("-")  # 50 %
        expect(page.locator(".et-zoom select")).to_have_value("50 %")

        # Drag from inside the first tile to inside the third one of the same row.
        boxes = [tiles.nth(k).bounding_box() for k in range(3)]
        assert boxes[2]["y"] == pytest.approx(boxes[0]["y"])
        page.mouse.move(boxes[0]["x"] + 8, boxes[0]["y"] + 8)
        page.mouse.down()
        page.mouse.move(boxes[1]["x"] + 20, boxes[1]["y"] + 30, steps=5)
        page.mouse.move(boxes[2]["x"] + 8, boxes[2]["y"] + 20, steps=5)
        page.mouse.up()
        expect(page.locator(".et-selected-count")).to_contain_text("3 selected")
        chosen = [int(tiles.nth(k).get_attribute("data-object-id")) for k in range(3)]
        expect(page.locator(".et-thumb.et-selected")).to_have_count(3)
        # Shift-drag over the fourth adds it; a plain click still toggles one tile.
        box = tiles.nth(3).bounding_box()
        page.keyboard.down("Shift")
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        page.mouse.move(box["x"] + 40, box["y"] + 40, steps=5)
        page.mouse.up()
        page.keyboard.up("Shift")
        expect(page.locator(".et-selected-count")).to_contain_text("4 selected")
        tiles.nth(3).click()
        expect(page.locator(".et-selected-count")).to_contain_text("3 selected")
        page.keyboard.press("v")
        expect(page.locator(".et-message")).to_contain_text("3 objects validated")

        # One object in detail: its sample on the map; a click on its image zooms it.
        page.keyboard.press("n")
        tiles.nth(5).click()
        detail = page.locator(".et-detail")
        expect(detail.locator(".et-map-this")).to_have_count(1)
        expect(detail.locator(".et-map-caption")).to_contain_text("Sample")
        land = page.request.get(page.url.split("?")[0].rstrip("/") + "/assets/land.svg")
        assert land.ok and b"<path" in land.body()
        img = detail.locator(".et-detail-img").first
        small = img.bounding_box()["width"]
        img.click()
        assert img.evaluate("e => getComputedStyle(e).position") == "fixed"
        assert img.bounding_box()["width"] > 2 * small
        img.click()
        assert img.evaluate("e => getComputedStyle(e).position") != "fixed"
    after = _states(inst, vp)
    changed = {o for o in after if after[o] != before[o]}
    assert {vp.objects[o] for o in changed} == set(chosen)
    assert all(after[o][0] == "validated" and after[o][2] == users["ann"] for o in changed)


def test_a_sign_in_expires(project):
    """After ECOTAXA_DASHBOARD_SESSION_MINUTES the page asks for the password again."""
    from playwright.sync_api import expect, sync_playwright

    inst, vp, users = project
    settings = inst.settings.model_copy(update={"dashboard_session_minutes": 0.05})  # 3 s
    with _dashboard(settings) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(20_000)
            _sign_in(page, url, "ann@example.org")
            expect(page.locator(".et-user")).to_contain_text("Ann")
            expect(page.locator(".et-session-expired")).to_contain_text(
                "Your session expired", timeout=15_000)
            expect(page.locator(".et-thumb")).to_have_count(0)
            expect(page.locator(".et-user")).to_have_count(0)
            _sign_in(page, url, "ann@example.org")  # a new sign-in starts a new session
            expect(page.locator(".et-thumb")).to_have_count(12)
        finally:
            browser.close()
