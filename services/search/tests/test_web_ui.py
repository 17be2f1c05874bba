"""The web page at `/`, driven in a real headless Chromium against the real search app and catalog.

Needs a system Chromium (`apt-get install -y chromium`, or WORLDLOOM_CHROMIUM=/path/to/chrome): Playwright's
bundled browsers are not downloaded. Set WORLDLOOM_SKIP_BROWSER=1 to skip on machines without one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from worldloom.core.service.background import BackgroundServer

TOKEN = "search-token"  # conftest.TOKEN (conftest is not importable under --import-mode=importlib)
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ALL_THUMBS_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#results .hit img.thumb')];
  return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""


def _find_chromium() -> str | None:
    for candidate in (os.environ.get("WORLDLOOM_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_search_pick_and_save_dataset_in_a_browser(request, tmp_path) -> None:
    if os.environ.get("WORLDLOOM_SKIP_BROWSER") == "1":
        pytest.skip("WORLDLOOM_SKIP_BROWSER=1")
    chromium = _find_chromium()
    if chromium is None:  # fail, not skip; checked before the (slow) catalog fixture is built
        pytest.fail("the web UI test needs a system Chromium and found none: install it with "
                    "`apt-get install -y chromium` (or set WORLDLOOM_CHROMIUM=/path/to/chromium), "
                    "or set WORLDLOOM_SKIP_BROWSER=1 to skip this test", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    catalog = request.getfixturevalue("catalog")
    search_app = request.getfixturevalue("search_app")

    # a bridge clip whose caption starts with the episode's robot instruction
    bridge = [r for r in catalog.records if r.status == "accepted" and r.source == "bridge"
              and r.caption_source.startswith("metadata") and "thumb.jpg" in r.renditions]
    assert bridge, [(r.source, r.status, r.caption_source) for r in catalog.records]
    target = bridge[0]
    query = target.caption
    thumb = catalog.store.get_bytes(target.renditions["thumb.jpg"])

    with BackgroundServer(search_app) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(20_000)
            expect.set_options(timeout=20_000)  # a busy 2-core machine: the first text query loads a model
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            expect(page).to_have_title("Worldloom search")
            status = page.locator("#status")

            # a wrong token: the API's 401 shows up in the status line
            page.fill("#token", "not-the-token")
            page.fill("#query", query)
            page.click("#search")
            expect(status).to_contain_text("unauthorized")
            expect(status).to_contain_text("invalid bearer token")
            expect(page.locator("#results .hit")).to_have_count(0)

            # the right token is kept in localStorage across a reload; Enter searches
            page.fill("#token", TOKEN)
            page.reload()
            expect(page.locator("#token")).to_have_value(TOKEN)
            page.fill("#query", query)
            page.press("#query", "Enter")
            expect(status).to_contain_text("text search")
            hits = page.locator("#results .hit")
            assert hits.count() > 2
            ids = [hits.nth(i).get_attribute("data-clip-id") for i in range(hits.count())]
            assert target.clip_id in ids[:3], (target.clip_id, ids)
            expect(status).to_contain_text(f"{len(ids)} results")
            page.wait_for_function(ALL_THUMBS_LOADED)
            first = hits.nth(0)
            expect(first.locator(".caption")).not_to_be_empty()
            expect(first.locator(".score")).to_contain_text("score")
            expect(first.locator(".source")).not_to_be_empty()

            # hovering a card swaps the still for the animated preview, leaving swaps it back
            first.locator(".media").hover()
            expect(first.locator("img.thumb")).to_have_attribute("data-kind", "preview")
            page.wait_for_function("() => document.querySelector('#results .hit img.thumb').naturalWidth > 0")
            page.mouse.move(5, 5)
            expect(first.locator("img.thumb")).to_have_attribute("data-kind", "thumb")

            # clicking the picture opens the clip's preview.mp4 in a dialog
            first.locator(".media").click()
            expect(page.locator("#player")).to_be_visible()
            expect(page.locator("#player-video")).to_have_attribute("src", re.compile(r"^blob:"))
            page.wait_for_function("() => document.querySelector('#player-video').readyState >= 1")
            page.click("#player-close")
            expect(page.locator("#player")).to_be_hidden()

            # pick two clips and save them as a dataset
            expect(page.locator("#save-dataset")).to_be_disabled()
            picks = ids[:2]
            for cid in picks:
                page.locator(f'#results .hit[data-clip-id="{cid}"] .pick').check()
            expect(page.locator("#picked-count")).to_have_text("2 picked")
            page.fill("#dataset-name", "web-ui-picks")
            page.click("#save-dataset")
            expect(status).to_contain_text("saved dataset web-ui-picks v1 (2 clips)")
            resp = httpx.get(f"{server.url}/v1/datasets/web-ui-picks", headers={"authorization": f"Bearer {TOKEN}"})
            assert resp.status_code == 200, resp.text
            assert sorted(resp.json()["clip_ids"]) == sorted(picks)

            # a small screenshot of the result grid (WORLDLOOM_UI_SCREENSHOTS=dir keeps it)
            shot = Path(os.environ.get("WORLDLOOM_UI_SCREENSHOTS") or tmp_path) / "search.jpg"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), type="jpeg", quality=60)
            assert 5_000 < shot.stat().st_size < 300_000

            # an invalid name is caught before the request
            page.fill("#dataset-name", "Not A Name")
            page.click("#save-dataset")
            expect(status).to_contain_text("dataset name")

            # "more like this" searches by the card's clip id, which is left out of its own results
            page.locator(f'#results .hit[data-clip-id="{ids[0]}"] .more').click()
            expect(status).to_contain_text("clip search")
            similar = [h.get_attribute("data-clip-id") for h in page.locator("#results .hit").all()]
            assert similar and ids[0] not in similar
            page.wait_for_function(ALL_THUMBS_LOADED)
            # picks survive a new search: the two saved clips stay checked wherever they show up
            for cid in set(similar) & set(picks):
                expect(page.locator(f'#results .hit[data-clip-id="{cid}"] .pick')).to_be_checked()

            # search by an image: the target clip's own thumbnail finds it
            page.set_input_files("#media", files=[{"name": "query.jpg", "mimeType": "image/jpeg", "buffer": thumb}])
            expect(status).to_contain_text("image search")
            found = [h.get_attribute("data-clip-id") for h in page.locator("#results .hit").all()]
            assert target.clip_id in found[:3], (target.clip_id, found)

            assert not errors, errors
        finally:
            browser.close()
