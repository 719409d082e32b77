"""The console's pages in a real browser against a running site: log in, watch the floor
live, act as each trade (acknowledge, hold, inspect, search the audit), and be refused what a
role may not do. Driven by Debian's Chromium through Playwright; every wait is one of
Playwright's auto-waiting assertions, never a sleep."""

from __future__ import annotations

import csv
import functools
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.conftest import PASSWORD, ConsoleSite

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Page, expect

expect.set_options(timeout=10_000)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile (no cookies) at the size of a floor console."""
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    try:
        yield ctx
    finally:
        ctx.close()


def logged_in(context: Any, site: ConsoleSite, user: str) -> Page:
    """A page whose profile holds ``user``'s session (logged in through the API, as the
    login page does, without typing it each time)."""
    answer = context.request.post(
        f"{site.url}/api/v1/session", data={"user": user, "password": PASSWORD}
    )
    assert answer.ok, answer.text()
    return new_page(context)


_JS_ERRORS: dict[int, list[str]] = {}


def new_page(context: Any) -> Page:
    """A page that remembers the script errors it met (see :func:`no_js_errors`)."""
    page: Page = context.new_page()
    errors = _JS_ERRORS.setdefault(id(page), [])
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def no_js_errors(page: Page) -> None:
    assert _JS_ERRORS.get(id(page), []) == []


def raise_alarm(site: ConsoleSite, source: str, message: str) -> None:
    site.loop.call_soon_threadsafe(
        functools.partial(site.services.alarms.alarm, source, message, active=True)
    )


def parcel_at_inspection(site: ConsoleSite, taken: set[str]) -> str:
    """The HAWB of a parcel that really waits at an inspection lane now: the youngest of the
    oldest open ones, the last the twin's own inspection officers will reach."""
    with site.login("viewer") as client:
        until = time.monotonic() + 30
        while True:
            waiting = [
                str(parcel["hawb"])
                for parcel in client.get("/api/v1/parcels/open").json()
                if parcel["state"] == "in_inspection" and parcel["hawb"] not in taken
            ]
            if waiting:
                taken.add(waiting[-1])
                return waiting[-1]
            assert time.monotonic() < until, "no parcel reached inspection within 30 s"
            time.sleep(0.3)


def inspected_by_the_twin(site: ConsoleSite, hawb: str) -> bool:
    """Whether the twin's inspection officers (not this test) closed the parcel."""
    with site.login("viewer") as client:
        records = client.get(f"/api/v1/parcels/{hawb}").json()
    return any(r["kind"] == "inspection_result" and r["user"] != "officer" for r in records)


_TAKEN: set[str] = set()


def test_log_in_and_watch_the_overview_update_live(console_site: ConsoleSite, context: Any) -> None:
    page = new_page(context)
    page.goto(f"{console_site.url}/overview")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Foverview$"))
    expect(page.locator("#user")).to_be_focused()

    page.fill("#user", "operator")
    page.fill("#password", "not-the-password")
    page.press("#password", "Enter")
    expect(page.locator("#error")).to_have_text("unknown user or wrong password")

    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    expect(page).to_have_url(f"{console_site.url}/overview")
    expect(page.locator("#live-indicator")).to_have_text("LIVE")
    expect(page.locator("#top .user")).to_have_text("operator")
    expect(page.locator("#top .nav-link.disabled", has_text="Audit")).to_be_visible()

    decisions = page.locator('[data-kpi="decisions"]')
    expect(decisions).to_have_text(re.compile(r"^\d[\d,]*$"))
    page.evaluate("window.notReloaded = true")
    before = decisions.inner_text()
    expect(decisions).not_to_have_text(before)  # the twin keeps deciding: the stream shows it
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#lines .line-card")).to_have_count(2)

    # a KPI value leads to its trend, drawn from the live values
    decisions.click()
    expect(page.locator("#trend")).to_be_visible()
    expect(page.locator("#trend-title")).to_have_text("Trend: Decisions")
    expect(page.locator("#trend-chart polyline")).to_have_count(1)
    no_js_errors(page)


def test_a_viewer_sees_no_actions_and_the_api_refuses_one(
    console_site: ConsoleSite, context: Any
) -> None:
    raise_alarm(console_site, "L2/viewer-test", "an alarm a viewer may not acknowledge")
    with console_site.login("operator") as operator:
        operator.post("/api/v1/holds", json={"hawb": "VIEWHOLD1", "reason": "for the viewer"})
    page = logged_in(context, console_site, "viewer")

    page.goto(f"{console_site.url}/alarms")
    expect(page.locator("#active", has_text="L2/viewer-test")).to_be_visible()
    expect(page.locator("[data-ack]")).to_have_count(0)

    page.goto(f"{console_site.url}/holds")
    expect(page.locator("#holds", has_text="VIEWHOLD1")).to_be_visible()
    expect(page.locator("#place-panel")).to_be_hidden()
    expect(page.locator("[data-lift]")).to_have_count(0)

    page.goto(f"{console_site.url}/inspection")
    expect(page.locator("#denied")).to_be_visible()
    for outcome in ("cleared", "seized", "referred"):
        expect(page.locator(f'[data-outcome="{outcome}"]')).to_be_disabled()
    for name in ("Review", "Inspection", "Audit"):
        expect(page.locator("#top .nav-link.disabled", has_text=name)).to_be_visible()

    page.goto(f"{console_site.url}/audit")
    expect(page.locator("#denied")).to_be_visible()
    expect(page.locator("#audit-page")).to_be_hidden()

    # the page hides the buttons; the API refuses the action anyway
    refused = page.evaluate(
        """async () => {
            const { api } = await import("/static/common.js");
            try {
                const body = {hawb: "VIEWHOLD2", reason: "x"};
                await api("/api/v1/holds", {method: "POST", body});
                return null;
            } catch (e) { return {status: e.status, message: e.message}; }
        }"""
    )
    assert refused["status"] == 403
    assert "viewer may not hold" in refused["message"]
    no_js_errors(page)


def test_an_operator_acknowledges_an_alarm_with_a_comment(
    console_site: ConsoleSite, context: Any
) -> None:
    raise_alarm(console_site, "L1/test-alarm", "test alarm")
    page = logged_in(context, console_site, "operator")
    page.goto(f"{console_site.url}/alarms")
    row = page.locator("#active tr", has_text="L1/test-alarm")
    expect(row).to_contain_text("unacknowledged")
    row.get_by_role("button", name="Acknowledge").click()
    expect(page.locator("#ack-dialog")).to_be_visible()
    expect(page.locator("#ack-comment")).to_be_focused()
    page.keyboard.type("reset the photo-eye <L1>")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#ack-dialog")).to_be_hidden()
    expect(row).to_contain_text("by operator: reset the photo-eye <L1>")
    # the raise is in the history too
    expect(page.locator("#history", has_text="L1/test-alarm")).to_be_visible()
    no_js_errors(page)


def test_an_operator_places_and_lifts_a_hold(console_site: ConsoleSite, context: Any) -> None:
    page = logged_in(context, console_site, "operator")
    page.goto(f"{console_site.url}/holds")
    expect(page.locator("#hawb")).to_be_focused()
    page.keyboard.type("PAGEHOLD1")
    page.keyboard.press("Enter")  # a scanner's Enter moves on to the reason
    expect(page.locator("#reason")).to_be_focused()
    page.keyboard.type("consignee on the watch list")
    page.keyboard.press("Enter")
    row = page.locator("#holds tr", has_text="PAGEHOLD1")
    expect(row).to_contain_text("consignee on the watch list")
    expect(row).to_contain_text("operator")

    row.get_by_role("button", name="Lift…").click()
    expect(page.locator("#lift-reason")).to_be_focused()
    page.locator("#lift-submit").click()  # without a reason: refused in the dialog
    expect(page.locator("#lift-error")).to_have_text("say why the hold is lifted")
    page.keyboard.type("cleared by the duty officer")
    page.keyboard.press("Enter")
    expect(page.locator("#lift-dialog")).to_be_hidden()
    expect(row).to_have_count(0)

    with console_site.login("supervisor") as supervisor:
        records = supervisor.get("/api/v1/audit", params={"hawb": "PAGEHOLD1"}).json()["records"]
    lifted = [r for r in records if r["data"].get("command") == "lift"]
    assert lifted
    assert lifted[0]["user"] == "operator"
    assert lifted[0]["data"]["reason"] == "cleared by the duty officer"
    no_js_errors(page)


def test_an_officer_records_an_inspection_of_a_parcel_waiting_there(
    console_site: ConsoleSite, context: Any
) -> None:
    page = logged_in(context, console_site, "officer")
    page.goto(f"{console_site.url}/inspection")
    expect(page.locator("#hawb")).to_be_focused()
    answer = page.locator("#answer")
    recent = page.locator("#recent tbody tr")
    # the twin's own officers inspect parcels too: one may close ours first (then try another)
    for attempt in range(1, 4):
        hawb = parcel_at_inspection(console_site, _TAKEN)
        page.keyboard.type(hawb)  # as a barcode scanner types it
        page.keyboard.press("Enter")
        expect(page.locator("#note")).to_be_focused()
        page.keyboard.type("lithium cells, undeclared")
        page.locator('[data-outcome="seized"]').click()
        expect(recent).to_have_count(attempt)
        if "answer-seized" in (answer.get_attribute("class") or ""):
            break
        assert inspected_by_the_twin(console_site, hawb), answer.inner_text()
    else:
        pytest.fail("the twin's officers closed every parcel picked first")

    expect(answer).to_contain_text(hawb)
    expect(answer).to_contain_text("Seized")
    expect(page.locator("#clearance")).to_have_text(re.compile(r"\d"))
    expect(page.locator("#hawb")).to_be_focused()  # ready for the next scan
    expect(page.locator("#hawb")).to_have_value("")
    mine = page.locator("#recent tr", has_text=hawb)
    expect(mine).to_contain_text("Seized")
    expect(mine).to_contain_text("officer")

    # the same parcel again: the controller refuses, and the page says why
    page.keyboard.type(hawb)
    page.keyboard.press("F1")
    expect(answer).to_contain_text("Not recorded")
    expect(answer).to_contain_text("waits at inspection")
    no_js_errors(page)


def test_a_supervisor_searches_the_audit_and_exports_csv(
    console_site: ConsoleSite, context: Any
) -> None:
    page = logged_in(context, console_site, "supervisor")
    page.goto(f"{console_site.url}/audit")
    page.get_by_label("Decision").check()
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"kind=decision"))
    rows = page.locator("#results tbody tr")
    expect(rows.first).to_contain_text("decision")
    expect(page.locator("#pager")).to_contain_text(re.compile(r"1–\d+ of [\d,]+"))

    with page.expect_download() as download_info:
        page.locator("#csv").click()
    download = download_info.value
    assert download.suggested_filename.startswith("cargogate-audit-")
    with open(download.path(), encoding="utf-8") as file:
        text = file.read()
    table = list(csv.DictReader(io.StringIO(text)))
    assert table, text[:200]
    assert {row["kind"] for row in table} == {"decision"}
    no_js_errors(page)


def test_trace_a_parcel_from_the_overview_and_an_unknown_hawb(
    console_site: ConsoleSite, context: Any
) -> None:
    page = logged_in(context, console_site, "viewer")
    page.goto(f"{console_site.url}/overview")
    first = page.locator("#open a").first
    expect(first).to_be_visible()
    hawb = first.inner_text()
    first.click()
    expect(page).to_have_url(re.compile(r"/trace\?hawb="))
    expect(page.locator(".trace-head h1")).to_have_text(hawb)
    timeline = page.locator("table.timeline")
    expect(timeline).to_contain_text("Scan")
    expect(timeline).to_contain_text("Decision")
    expect(timeline.locator(".reason").first).to_be_visible()

    page.locator("#hawb").fill("NO-SUCH-HAWB-1")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"hawb=NO-SUCH-HAWB-1"))
    expect(page.locator(".notfound")).to_contain_text("No record of this HAWB")
    no_js_errors(page)
