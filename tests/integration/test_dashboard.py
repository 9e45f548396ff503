"""The live dashboard in a real headless browser: Debian's chromium, driven by Playwright
(no downloaded browser). Load the page, click as a user, see the list change."""

from __future__ import annotations

import os
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from streams.admin import produce
from streams.broker import LocalBroker
from tests.conftest import isolated_settings
from tests.integration.helpers import start_worker_with_catalog
from tests.media_samples import circles, encoded, inline

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
POSTER = {
    "item_id": "poster-1",
    "title": "Crimson circles poster",
    "tags": ["art", "poster"],
    "image": inline(encoded(circles()), "image/png"),
}


def listed(page) -> list[str]:
    return page.locator("#recs li").evaluate_all("rows => rows.map(row => row.dataset.itemId)")


def test_the_dashboard_shows_a_users_list_change_after_each_click(
    broker: LocalBroker, tmp_path
) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium on the CI machine: .ci/run installs Debian's chromium")
        pytest.skip("no chromium: install Debian's chromium (apt-get install chromium)")
    settings = isolated_settings(broker, tmp_path / "data")
    worker = start_worker_with_catalog(settings)
    try:
        produce(settings, settings.topic_items, [(POSTER["item_id"], POSTER)])
        worker.wait_until(lambda s: s["catalog"] >= 31, 60, "poster stored")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://{settings.web_host}:{settings.web_port}/dashboard/")
            page.fill("#user", "dash-user")
            page.click("#show")
            expect(page.locator("#list-status")).to_contain_text("no list yet for dash-user")
            expect(page.locator("#catalog-size")).to_have_text("31")
            # The item with an image shows its thumbnail; clicking it gives the first list.
            poster = page.locator(".catalog-item", has_text=POSTER["title"])
            expect(poster.locator("img.thumb")).to_be_visible()
            assert poster.locator("img.thumb").get_attribute("src").startswith("data:image/jpeg")
            poster.locator("button.click").click()
            expect(page.locator("#recs li")).to_have_count(settings.top_k, timeout=30_000)
            expect(page.locator("#list-status")).to_contain_text("ms after the click")
            first = listed(page)
            assert POSTER["item_id"] not in first
            expect(page.locator("#recs .reason").first).to_be_visible()
            # Clicking the top recommendation: a new list without it.
            top = first[0]
            page.locator(f"#recs button.click[data-item-id='{top}']").click()
            expect(page.locator(f"#recs li[data-item-id='{top}']")).to_have_count(0, timeout=30_000)
            expect(page.locator("#list-status")).to_contain_text("after 2 events of dash-user")
            assert listed(page) != first
            # The worker's figures: both clicks counted, latency measured.
            expect(page.locator("#rates")).to_contain_text(settings.topic_interactions)
            expect(page.locator("#p50")).to_contain_text("ms")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            browser.close()
    finally:
        worker.stop()
