"""The officer review station in a real browser against a real site.

An officer logs in, answers a parcel from the keyboard before its countdown ends (and the
journal names the officer), leaves another alone (it goes to inspection), and a viewer
watches without verdict buttons. A second site renders the twin's X-ray images and scores
them with the shipped ONNX model: the image tools work on the canvas.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.console.conftest import PASSWORD, ROOT, ConsoleSite, console_config, serve_site

WAIT_MS = 20_000
DRAWN = re.compile(r"^[1-9][0-9]*$")


# --- an image-carrying site ----------------------------------------------------------------


def _xray_config(tmp: Path) -> dict[str, Any]:
    """The demo-xray site (twin-rendered images, the shipped model) with the review station."""
    xray = yaml.safe_load((ROOT / "config/demo-xray.yaml").read_text())
    raw = console_config(
        tmp,
        speed=1.0,
        policy=xray["policy"],
        xray={**xray["xray"], "model": str(ROOT / xray["xray"]["model"])},
        intake={**xray["intake"], "quarantine": str(tmp / "quarantine")},
    )
    raw["plant"]["scanner_images"] = 2  # rendered at start: few, to start fast
    return raw


@pytest.fixture(scope="module")
def xray_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    with serve_site(_xray_config(tmp_path_factory.mktemp("console-xray"))) as site:
        yield site


# --- helpers -------------------------------------------------------------------------------


def _open_station(browser: Any, site: ConsoleSite, user: str) -> tuple[Any, list[str]]:
    """A fresh browser page logged in as ``user`` through the login page, on /review, and
    the page's uncaught script errors."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{site.url}/review")
    expect(page).to_have_url(f"{site.url}/login?next=%2Freview")
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{site.url}/review")
    expect(page.locator("#main")).to_have_attribute("aria-busy", "false")
    return page, errors


def _waiting(page: Any) -> Any:
    return page.locator('#queue li[data-state="waiting"]')


# --- the tests -----------------------------------------------------------------------------


def test_an_officer_answers_from_the_keyboard_and_a_parcel_left_alone_goes_to_inspection(
    console_site: ConsoleSite, browser: Any
) -> None:
    from playwright.sync_api import expect

    page, errors = _open_station(browser, console_site, "officer")
    try:
        expect(page.locator("#v-clear")).to_be_visible()
        # a parcel with time left: take the one with the most, select it, press C
        expect(_waiting(page).first).to_be_visible(timeout=WAIT_MS)
        chosen = _waiting(page).last
        hawb = chosen.get_attribute("data-hawb")
        key = chosen.get_attribute("data-key")
        assert hawb
        assert key
        chosen.click()
        expect(page.locator("#d-hawb")).to_have_text(hawb)
        # the twin's X-ray is simulated here: no image, and the station says so
        expect(page.locator("#stage-msg")).to_have_text("No image from the scanner")
        page.keyboard.press("c")
        result = page.locator("#verdict-result")
        expect(result).to_contain_text(f"Clear accepted for {hawb}")
        expect(page.locator(f'#recent li[data-hawb="{hawb}"]')).to_contain_text("Cleared")
        expect(page.locator(f'#queue li[data-key="{key}"]')).to_have_count(0)

        # the journal names the officer
        line, tracking_id = key.split("/")
        with console_site.login("officer") as client:
            trace = client.get(f"/api/v1/lines/{line}/parcels/{tracking_id}").json()
        verdicts = [
            r
            for r in trace
            if r["kind"] == "command"
            and r["data"].get("command") == "verdict"
            and r["hawb"] == hawb
        ]
        assert verdicts, trace
        assert verdicts[-1]["user"] == "officer"
        assert verdicts[-1]["data"]["outcome"] == "clear"
        assert verdicts[-1]["data"]["accepted"] is True

        # a parcel left alone: its countdown runs out and it goes to inspection
        expect(_waiting(page).first).to_be_visible(timeout=WAIT_MS)
        alone = _waiting(page).first.get_attribute("data-hawb")
        assert alone
        assert alone != hawb
        expect(page.locator(f'#recent li[data-hawb="{alone}"]')).to_contain_text(
            "Gone to inspection", timeout=WAIT_MS
        )
        # the station moved on by itself: the parcel on screen is one still waiting
        expect(page.locator("#d-hawb")).not_to_have_text(alone)
        assert errors == []
    finally:
        page.context.close()


def test_a_viewer_sees_the_queue_but_no_verdict_buttons(
    console_site: ConsoleSite, browser: Any
) -> None:
    from playwright.sync_api import expect

    page, errors = _open_station(browser, console_site, "viewer")
    try:
        expect(_waiting(page).first).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#verdict-none")).to_contain_text("may not give verdicts")
        expect(page.get_by_role("button", name="Clear")).to_have_count(0)
        expect(page.get_by_role("button", name="Inspect")).to_have_count(0)
        expect(page.locator("#v-clear, #v-inspect")).to_have_count(0)
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.keyboard.press("c")
        page.keyboard.press("i")
        expect(page.locator("#verdict-result")).to_have_text("")
        assert posts == []
        assert errors == []
    finally:
        page.context.close()


_SAMPLE = """
() => {
  // the canvas's pixels along its middle row, where the image is
  const c = document.getElementById("xray");
  const row = c.getContext("2d").getImageData(0, Math.floor(c.height / 2), c.width, 1).data;
  const out = [];
  for (let x = Math.floor(c.width * 0.2); x < c.width * 0.8; x += 7) out.push(row[4 * x]);
  return { hawb: document.getElementById("d-hawb").textContent, values: out };
}
"""


def test_the_image_tools_change_the_canvas(xray_site: ConsoleSite, browser: Any) -> None:
    from playwright.sync_api import expect

    page, errors = _open_station(browser, xray_site, "officer")
    try:
        canvas = page.locator("#xray")
        for _ in range(5):  # the parcel on screen may go on meanwhile: try the next one
            expect(canvas).to_have_attribute("data-renders", DRAWN, timeout=WAIT_MS)
            before = page.evaluate(_SAMPLE)
            renders = int(canvas.get_attribute("data-renders") or 0)
            page.keyboard.press("n")
            expect(canvas).not_to_have_attribute("data-renders", str(renders))
            after = page.evaluate(_SAMPLE)
            page.keyboard.press("n")  # back to normal for the next try
            if before["hawb"] == after["hawb"] and before["values"] and after["values"]:
                break
        else:
            pytest.fail("no parcel stayed on screen long enough to try the inverse")
        pairs = list(zip(before["values"], after["values"], strict=True))
        assert any(abs(b - 128) > 40 for b, _ in pairs), "no contrast on the middle row"
        assert all(abs(a - (255 - b)) <= 3 for b, a in pairs), pairs
        # the energies are the same image here (single-energy scanner): no material colour
        expect(page.locator("#t-material")).to_be_disabled()
        assert errors == []
    finally:
        page.context.close()
