"""The officer review station in a real browser against a real site.

An officer logs in, answers a parcel from the keyboard before its countdown ends (and the
journal names the officer), leaves another alone (it goes to inspection), and a viewer
watches without verdict buttons. A second site renders the twin's X-ray images and scores
them with the shipped ONNX model: the image tools work on the canvas. With a queue the test
serves itself (the browser's /api/v1/reviews and live stream answered here), the countdown's
colour follows each review's window, the scores show the policy's thresholds, and the
material colour follows the image's energies.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
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
        xray={**xray["xray"], "model": str(ROOT / "config" / xray["xray"]["model"])},
        intake={**xray["intake"], "quarantine": str(tmp / "quarantine")},
    )
    raw["plant"]["scanner_images"] = 2  # rendered at start: few, to start fast
    return raw


@pytest.fixture(scope="module")
def xray_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    with serve_site(_xray_config(tmp_path_factory.mktemp("console-xray"))) as site:
        yield site


# --- helpers -------------------------------------------------------------------------------


def _open_station(
    browser: Any, site: ConsoleSite, user: str, routes: Callable[[Any], None] | None = None
) -> tuple[Any, list[str]]:
    """A fresh browser page logged in as ``user`` through the login page, on /review, and
    the page's uncaught script errors; ``routes`` installs routes on the browser context
    first."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1366, "height": 768})
    if routes is not None:
        routes(context)
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


class _Queue:
    """A review queue the test serves the station instead of the site's: each review (a
    ``ReviewOut``) with its deadline ``left_s`` wall seconds from now, out of ``window_s``."""

    def __init__(self) -> None:
        self._reviews: list[tuple[float, dict[str, Any]]] = []

    def add(
        self,
        hawb: str,
        left_s: float,
        window_s: float,
        *,
        scores: dict[str, float] | None = None,
        thresholds: dict[str, tuple[float, float]] | None = None,
        energies: int = 0,
        channel: str = "GREEN",
    ) -> None:
        review = {
            "line": "T1",
            "tracking_id": 900 + len(self._reviews),
            "hawb": hawb,
            "deadline_s": 1000.0,
            "time_left_s": left_s,
            "window_s": window_s,
            "risk": {"channel": channel, "score": 0.01, "declared_goods": "books", "flight": "T1"},
            "xray": {
                "status": "ok",
                "scores": scores or {},
                "thresholds": {
                    name: {"clear": clear, "alarm": alarm}
                    for name, (clear, alarm) in (thresholds or {}).items()
                },
                "model_version": "test-model",
                "detail": "",
            },
            "image": energies > 0,
            "energies": energies,
        }
        self._reviews.append((time.monotonic() + left_s, review))

    def now(self) -> list[dict[str, Any]]:
        """The queue as the controller would list it now (time left counting down)."""
        at = time.monotonic()
        return [
            {**review, "time_left_s": deadline - at}
            for deadline, review in self._reviews
            if deadline > at
        ]

    def serve(self, context: Any) -> None:
        """Answer the station's /api/v1/reviews and live stream (one message) from here."""
        context.route("**/api/v1/reviews", lambda route: route.fulfill(json=self.now()))

        def live(route: Any) -> None:
            message = {"site": "TEST", "reviews": self.now()}
            route.fulfill(
                status=200,
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
                body=f"data: {json.dumps(message)}\n\n",
            )

        context.route("**/api/v1/live", live)


def _width_share(locator: Any) -> float:
    """An element's inline width as a share of 1 (its style says ``width: N%``)."""
    style = locator.get_attribute("style") or ""
    match = re.search(r"width:\s*([0-9.]+)%", style)
    assert match, style
    return float(match[1]) / 100


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
        # the page works read-only for a viewer: the top bar links to it
        expect(page.locator('#top a.nav-link[href="/review"]')).to_have_attribute(
            "aria-current", "page"
        )
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
        # the twin's scanner sends one energy (the review says energies 1): no material colour
        expect(page.locator("#t-material")).to_be_disabled()
        assert errors == []
    finally:
        page.context.close()


def test_the_countdown_colour_follows_the_review_window(
    console_site: ConsoleSite, browser: Any
) -> None:
    """Three parcels with the same time left, out of different windows: green with three
    quarters of its window left, amber with three eighths, red with 15 % (the time left
    when the station first saw them would make all three green)."""
    from playwright.sync_api import expect

    queue = _Queue()
    queue.add("TEST-GREEN", 60.0, 80.0)
    queue.add("TEST-AMBER", 60.1, 160.0)
    queue.add("TEST-RED", 60.2, 400.0)
    page, errors = _open_station(browser, console_site, "officer", queue.serve)
    try:
        shares = {"TEST-GREEN": 0.75, "TEST-AMBER": 0.375, "TEST-RED": 0.15}
        levels = {"TEST-GREEN": "green", "TEST-AMBER": "amber", "TEST-RED": "red"}
        for hawb, level in levels.items():
            row = page.locator(f'#queue li[data-hawb="{hawb}"]')
            expect(row).to_have_attribute("data-level", level)
            # the bar: the share of the window left (a few seconds pass meanwhile)
            share = _width_share(row.locator(".q-fill"))
            assert shares[hawb] - 0.1 < share <= shares[hawb] + 0.01, (hawb, share)
        page.locator('#queue li[data-hawb="TEST-RED"]').click()
        expect(page.locator("#d-hawb")).to_have_text("TEST-RED")
        expect(page.locator("#clock")).to_have_attribute("data-level", "red")
        assert 0.05 < _width_share(page.locator("#clock-fill")) <= 0.16
        page.locator('#queue li[data-hawb="TEST-AMBER"]').click()
        expect(page.locator("#clock")).to_have_attribute("data-level", "amber")
        page.locator('#queue li[data-hawb="TEST-GREEN"]').click()
        expect(page.locator("#clock")).to_have_attribute("data-level", "green")
        assert 0.6 < _width_share(page.locator("#clock-fill")) <= 0.76
        assert errors == []
    finally:
        page.context.close()


def test_the_scores_show_the_policy_thresholds(console_site: ConsoleSite, browser: Any) -> None:
    from playwright.sync_api import expect

    queue = _Queue()
    queue.add(
        "TEST-SCORES",
        60.0,
        70.0,
        scores={"firearm": 0.12, "blade": 0.01, "liquid_container": 0.7, "unknown_class": 0.4},
        thresholds={"firearm": (0.05, 0.30), "blade": (0.08, 0.35), "liquid_container": (0.2, 0.6)},
    )
    page, errors = _open_station(browser, console_site, "officer", queue.serve)
    try:
        expect(page.locator("#d-hawb")).to_have_text("TEST-SCORES")
        scores = page.locator("#d-scores")
        zones = {
            "firearm": "ambiguous",
            "blade": "clean",
            "liquid_container": "alarm",
            "unknown_class": "none",
        }
        for name, zone in zones.items():
            expect(scores.locator(f'li[data-class="{name}"]')).to_have_attribute("data-zone", zone)
        # a tick for each threshold of a scored class, where the threshold is on the bar
        firearm = scores.locator('li[data-class="firearm"]')
        bar = firearm.locator(".s-bar").bounding_box()
        assert bar
        for tick, at in ((".s-tick-clear", 0.05), (".s-tick-alarm", 0.30)):
            expect(firearm.locator(tick)).to_have_count(1)
            box = firearm.locator(tick).bounding_box()
            assert box
            x = (box["x"] + box["width"] / 2 - bar["x"]) / bar["width"]
            assert abs(x - at) < 0.02, (tick, x)
        expect(firearm.locator(".s-band")).to_have_text("0.05–0.30")
        # a class the policy has no thresholds for: no ticks
        expect(scores.locator('li[data-class="unknown_class"] .s-tick')).to_have_count(0)
        # the bar's colour says where the score sits
        fill = firearm.locator(".s-fill")
        ambiguous = fill.evaluate("e => getComputedStyle(e).backgroundColor")
        alarm = scores.locator('li[data-class="liquid_container"] .s-fill').evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        clean = scores.locator('li[data-class="blade"] .s-fill').evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        assert len({ambiguous, alarm, clean}) == 3, (ambiguous, alarm, clean)
        # and in words: which class is ambiguous (why it is here), which at alarm
        why = page.locator("#d-xray-why")
        expect(why).to_contain_text("Ambiguous: Firearm")
        expect(why).to_contain_text("At alarm: Liquid container")
        expect(why).not_to_contain_text("Blade")
        assert errors == []
    finally:
        page.context.close()


def _pngs(dual_energy: bool) -> dict[str, bytes]:
    """A rendered parcel's image as the console serves it, by energy."""
    from controller.console.images import Energy, ImageShelf
    from controller.core.ports import ScanImage
    from simulation.xray_synth import render_parcel

    sample = render_parcel(20261207, "firearm", dual_energy=dual_energy, clutter=(3, 6))
    shelf = ImageShelf()
    shelf(ScanImage("X", 1, "test", 0.0, pixels=sample.pixels), None)  # type: ignore[arg-type]
    energies: tuple[Energy, ...] = ("high", "low")
    pngs = {energy: shelf.png("X", 1, energy) for energy in energies}
    return {energy: png for energy, png in pngs.items() if png is not None}


_COLOURED = """
() => {
  // the share of the canvas's pixels with a clear colour (not grey)
  const c = document.getElementById("xray");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let coloured = 0;
  for (let i = 0; i < d.length; i += 4) {
    const hi = Math.max(d[i], d[i + 1], d[i + 2]);
    const lo = Math.min(d[i], d[i + 1], d[i + 2]);
    if (hi - lo > 40) coloured += 1;
  }
  return coloured / (d.length / 4);
}
"""


def test_the_material_colour_follows_the_energies(console_site: ConsoleSite, browser: Any) -> None:
    """A dual-energy image (``energies`` 2) is shown in material colour; a single-energy one
    (1) is fetched once, in grey, with material colour disabled and the reason given."""
    from playwright.sync_api import expect

    images = {"TEST-DUAL": _pngs(dual_energy=True), "TEST-SINGLE": _pngs(dual_energy=False)}
    asked: list[tuple[str, str]] = []

    def image(route: Any) -> None:
        match = re.search(r"/images/([^/?]+)\?tracking_id=\d+&energy=(\w+)", route.request.url)
        assert match, route.request.url
        asked.append((match[1], match[2]))
        route.fulfill(body=images[match[1]][match[2]], content_type="image/png")

    queue = _Queue()
    queue.add("TEST-DUAL", 120.0, 130.0, energies=2)
    queue.add("TEST-SINGLE", 125.0, 130.0, energies=1)

    def routes(context: Any) -> None:
        queue.serve(context)
        context.route("**/api/v1/images/**", image)

    page, errors = _open_station(browser, console_site, "officer", routes)
    try:
        canvas = page.locator("#xray")
        expect(page.locator("#d-hawb")).to_have_text("TEST-DUAL")
        expect(canvas).to_have_attribute("data-material", "true", timeout=WAIT_MS)
        expect(page.locator("#t-material")).to_be_enabled()
        expect(page.locator("#t-material")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#legend")).to_be_visible()
        assert page.evaluate(_COLOURED) > 0.05

        page.locator('#queue li[data-hawb="TEST-SINGLE"]').click()
        expect(page.locator("#d-hawb")).to_have_text("TEST-SINGLE")
        # disabled once the single-energy image is on the canvas
        expect(page.locator("#t-material")).to_be_disabled(timeout=WAIT_MS)
        expect(canvas).to_have_attribute("data-material", "false")
        expect(page.locator("#image-note")).to_contain_text("single-energy")
        expect(page.locator("#legend")).to_be_hidden()
        assert page.evaluate(_COLOURED) < 0.001
        # the energies say how many images to fetch: no pixel comparison, no second fetch
        assert sorted(asked) == [
            ("TEST-DUAL", "high"),
            ("TEST-DUAL", "low"),
            ("TEST-SINGLE", "high"),
        ]
        assert errors == []
    finally:
        page.context.close()
