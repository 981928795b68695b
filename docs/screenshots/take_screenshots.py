"""Screenshots of the dashboard's main pages, on a copy of a demo instance.

Run the demo first (``ecotaxa demo``, its data folder is ``ECOTAXA_HOME``),
then::

    python docs/screenshots/take_screenshots.py --home ecotaxa_data

The instance is copied to a temporary folder (the demo's own data is never
changed); a user ``screenshots@localhost`` is made annotator of the demo
project there. The pages are served for real and shot with Debian's
chromium: the sign-in form, the validation page sorted by score with the
category tree, one object's detail with its history (after a move and its
undo), the keys overlay, a similarity sort, the project list, the project
page, a lasso on the batch classification map and the settings page. PNG files land next to this script.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EMAIL, PASSWORD = "screenshots@localhost", "screenshots-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_instance(home: Path, into: Path):
    from sqlalchemy import select

    from ecotaxa_core.db.engine import make_engine, upgrade_schema
    from ecotaxa_core.db.models import Project, Role
    from ecotaxa_core.instance import Instance
    from ecotaxa_core.projects import set_member
    from ecotaxa_core.settings import Settings
    from ecotaxa_core.users import create_user

    if not (home / "ecotaxa.db").is_file():
        raise SystemExit(f"{home}: no ecotaxa.db; run `ecotaxa demo` first (ECOTAXA_HOME={home})")
    shutil.copytree(home, into, ignore=shutil.ignore_patterns("exports", "logs"))
    settings = Settings(home=into)
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)  # a demo made by an older version: the copy only
    engine.dispose()
    inst = Instance.open(settings)
    with inst.sessions.begin() as s:
        project_id = s.scalars(select(Project.id).order_by(Project.id.desc())).first()
        user = create_user(s, EMAIL, "Screenshot Annotator", PASSWORD)
        s.flush()
        set_member(s, project_id, user.id, Role.ANNOTATOR)
    inst.close()
    return settings, project_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="the demo's data folder")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    from dashboards.app import serve_dashboard

    with tempfile.TemporaryDirectory(prefix="ecotaxa_screens_") as tmp:
        settings, project_id = _copy_instance(args.home.resolve(), Path(tmp) / "home")
        port = _free_port()
        server = serve_dashboard(settings, port=port, threaded=True)
        try:
            deadline = time.monotonic() + 30
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                if time.monotonic() > deadline:
                    raise SystemExit("the dashboard did not start")
                time.sleep(0.2)
            url = f"http://127.0.0.1:{port}/?project={project_id}&status=predicted"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(30_000)
                page.goto(url)
                page.locator(".et-email input").wait_for()
                page.screenshot(path=str(args.out / "sign_in.png"))
                page.locator(".et-email input").fill(EMAIL)
                page.locator(".et-password input").fill(PASSWORD)
                page.locator(".et-sign-in button").click()
                tiles = page.locator(".et-thumb")
                tiles.first.wait_for()
                page.mouse.move(5, 990)  # no hover preview in the pictures
                page.wait_for_timeout(1500)  # thumbnails
                page.screenshot(path=str(args.out / "validation_page.png"))

                tiles.nth(1).click()
                page.keyboard.press("m")
                page.keyboard.type("detritus", delay=20)
                page.locator(".et-picker-option").first.wait_for()
                page.keyboard.press("Enter")
                page.keyboard.press("Enter")
                expect(page.locator(".et-message")).to_contain_text("moved to")
                page.locator(".et-grid-host .et-grid").click(position={"x": 3, "y": 3})
                page.keyboard.press("u")
                expect(page.locator(".et-message")).to_contain_text("Undone")
                page.keyboard.press("n")
                tiles.nth(1).click()
                page.locator(".et-detail .et-history-row").first.wait_for()
                page.mouse.move(5, 990)
                page.wait_for_timeout(800)
                page.screenshot(path=str(args.out / "object_detail.png"))

                page.keyboard.press("s")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(args.out / "similarity_sort.png"))
                page.keyboard.press("?")
                page.locator(".et-help-overlay").wait_for()
                page.screenshot(path=str(args.out / "keyboard_help.png"))
                page.keyboard.press("?")
                page.locator(".bk-tab", has_text="All projects").click()
                page.locator(".et-project-row").first.wait_for()
                page.screenshot(path=str(args.out / "project_list.png"))
                page.locator(".et-open-project button").first.click()
                page.locator(".bk-tab", has_text="Project").first.click()
                page.locator(".et-project-head").wait_for()
                page.wait_for_timeout(2500)  # plots and the confusion matrix
                page.screenshot(path=str(args.out / "project_page.png"))
                page.locator(".bk-tab", has_text="Batch").click()
                page.locator(".et-batch-load button").click()
                page.locator(".et-batch-message", has_text="on the map").wait_for()
                box = page.locator("canvas").last.bounding_box()
                page.wait_for_timeout(1500)  # the points drawn
                # A lasso around the left third of the map (one cloud of look-alikes).
                corners = [(0.06, 0.40), (0.38, 0.40), (0.38, 0.80), (0.06, 0.80), (0.06, 0.41)]
                xs = [box["x"] + fx * box["width"] for fx, _ in corners]
                ys = [box["y"] + fy * box["height"] for _, fy in corners]
                page.mouse.move(xs[0], ys[0])
                page.mouse.down()
                for x, y in zip(xs[1:], ys[1:]):
                    page.mouse.move(x, y, steps=6)
                page.mouse.up()
                page.wait_for_timeout(2000)
                page.mouse.move(5, 990)
                page.screenshot(path=str(args.out / "batch_classification.png"))
                page.locator(".bk-tab", has_text="Settings").click()
                page.locator(".et-settings-save").wait_for()
                page.wait_for_timeout(800)
                page.screenshot(path=str(args.out / "project_settings.png"))
                browser.close()
        finally:
            server.stop()
    print("screenshots in", args.out)


if __name__ == "__main__":
    main()
