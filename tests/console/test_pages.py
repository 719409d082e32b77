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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse, urlsplit

import httpx
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
_REQUESTS: dict[int, list[str]] = {}


def new_page(context: Any) -> Page:
    """A page that remembers the script errors it met (see :func:`no_js_errors`) and the API
    paths it asked for (see :func:`api_requests`)."""
    page: Page = context.new_page()
    errors = _JS_ERRORS.setdefault(id(page), [])
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    requests = _REQUESTS.setdefault(id(page), [])
    page.on("request", lambda request: requests.append(request.url))
    return page


def no_js_errors(page: Page) -> None:
    assert _JS_ERRORS.get(id(page), []) == []


def api_requests(page: Page, path: str) -> list[str]:
    """The page's requests so far whose path starts with ``path``, as path and query."""
    urls = (urlsplit(url) for url in _REQUESTS.get(id(page), []))
    return [
        f"{url.path}?{url.query}" if url.query else url.path
        for url in urls
        if url.path.startswith(path)
    ]


def seconds(shown: str) -> float:
    """A duration as the pages show it (``4.2 s``, ``37 s``, ``2m 05s``) in seconds."""
    text = shown.strip()
    if match := re.fullmatch(r"(\d+(?:\.\d)?) s", text):
        return float(match[1])
    if match := re.fullmatch(r"(\d+)m (\d\d)s", text):
        return 60 * int(match[1]) + int(match[2])
    raise AssertionError(f"not a duration the pages show: {shown!r}")


def human_reason(name: str) -> str:
    """A reason's name as the pages show it (audit.js humanReason)."""
    text = re.sub(r"\bxray\b", "x-ray", name.lower().replace("_", " "))
    return text[:1].upper() + text[1:]


def raise_alarm(site: ConsoleSite, source: str, message: str) -> None:
    site.loop.call_soon_threadsafe(
        functools.partial(site.services.alarms.alarm, source, message, active=True)
    )


def waiting_at_inspection(client: httpx.Client) -> list[dict[str, Any]]:
    """Every parcel waiting at inspection now, oldest first."""
    answer = client.get("/api/v1/parcels/open", params={"state": "in_inspection", "limit": 1000})
    answer.raise_for_status()
    parcels: list[dict[str, Any]] = answer.json()
    assert all(parcel["state"] == "in_inspection" for parcel in parcels)
    return parcels


def parcel_at_inspection(site: ConsoleSite, taken: set[str]) -> str:
    """The HAWB of a parcel that really waits at an inspection lane now: the youngest of
    those waiting there, the last the twin's own inspection officers will reach."""
    with site.login("viewer") as client:
        until = time.monotonic() + 30
        while True:
            waiting = [
                str(parcel["hawb"])
                for parcel in waiting_at_inspection(client)
                if parcel["hawb"] not in taken
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


@pytest.mark.parametrize(
    "next_page", ["/%09/evil.example", "//evil.example", "/\\evil.example", "https://evil.example/"]
)
def test_the_login_page_never_sends_the_browser_to_another_site(
    console_site: ConsoleSite, context: Any, next_page: str
) -> None:
    page = new_page(context)
    page.goto(f"{console_site.url}/login?next={next_page}")
    page.fill("#user", "viewer")
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    expect(page).to_have_url(re.compile(rf"^{re.escape(console_site.url)}/"))
    assert "evil" not in page.url.split("?")[0].replace(console_site.url, "")


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
    # lanes show the PLC's status by name
    statuses = page.locator("#lines table.lanes tbody td .badge")
    expect(statuses.first).to_be_visible()
    assert {s.strip().lower() for s in statuses.all_text_contents()} <= {
        "available",
        "full",
        "blocked",
    }

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
    for name in ("Inspection", "Audit"):
        expect(page.locator("#top .nav-link.disabled", has_text=name)).to_be_visible()
    expect(page.locator('#top a.nav-link[href="/review"]')).to_be_visible()  # read-only there

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
    raised = time.monotonic()
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
    # "active for" counts wall seconds since the alarm was raised (the twin's hub clock runs
    # twice as fast: hub seconds would be about double)
    active_for = seconds(row.locator("td.num").inner_text())
    assert 0 <= active_for <= time.monotonic() - raised + 0.5
    # the raise is in the history too
    expect(page.locator("#history", has_text="L1/test-alarm")).to_be_visible()

    # the severity filter comes before the paging: the total counts only what matches
    page.locator("#filters select[name=severity]").select_option("warning")
    page.locator("#filters input[name=text]").fill("L1/test-alarm")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#history tbody tr")).to_have_count(1)
    expect(page.locator("#pager")).to_contain_text("1–1 of 1")
    expect(page.locator("#pager")).not_to_contain_text("before the severity filter")
    # the CSV link carries the filters, not a page: the download is the whole search
    link = urlsplit(page.locator("#csv").get_attribute("href") or "")
    assert link.path == "/api/v1/alarms/history"
    assert parse_qs(link.query) == {
        "severity": ["warning"],
        "text": ["L1/test-alarm"],
        "format": ["csv"],
    }
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
    # since (a wall time) and held for come with the hold: no trace is fetched for them
    expect(row.locator("td").nth(3)).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    expect(row.locator("td.num")).to_have_text(re.compile(r"^\d+(\.\d)? s$"))
    assert api_requests(page, "/api/v1/parcels/") == []

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


def test_the_inspection_station_lists_every_parcel_waiting_there(
    console_site: ConsoleSite, context: Any
) -> None:
    with console_site.login("viewer") as client:
        waiting = waiting_at_inspection(client)
        oldest = {p["hawb"] for p in client.get("/api/v1/overview").json()["oldest_open"]}
    # the floor's list and one parcel more, among none of the oldest open ones of the
    # overview: only the list of the parcels in inspection can bring it to the page
    extra = {
        "line": "L1",
        "tracking_id": 999_999,
        "hawb": "WAITING-TEST-1",
        "state": "in_inspection",
        "arrived_at_s": 0.0,
        "arrived_at": datetime.now(UTC).isoformat(),
        "age_s": 1.0,
        "laps": 0,
    }
    served = [*waiting, extra]
    assert "WAITING-TEST-1" not in oldest
    asked: list[str] = []

    def fulfil(route: Any) -> None:
        asked.append(route.request.url)
        route.fulfill(json=served)

    page = logged_in(context, console_site, "officer")
    page.route("**/api/v1/parcels/open?*", fulfil)
    page.goto(f"{console_site.url}/inspection")
    rows = page.locator("#waiting tbody tr")
    expect(rows).to_have_count(len(served))
    expect(page.locator("#waiting-count")).to_have_text(str(len(served)))
    assert asked
    for url in asked:
        assert parse_qs(urlsplit(url).query) == {"state": ["in_inspection"], "limit": ["1000"]}
    # a row fills the HAWB in, ready for the note
    page.locator("#waiting").get_by_role("button", name="WAITING-TEST-1").click()
    expect(page.locator("#hawb")).to_have_value("WAITING-TEST-1")
    expect(page.locator("#note")).to_be_focused()
    no_js_errors(page)


def test_a_supervisor_searches_the_audit_and_exports_csv(
    console_site: ConsoleSite, context: Any
) -> None:
    with console_site.login("supervisor") as client:
        reasons = client.get("/api/v1/reasons").json()["reasons"]
        # well over one page of results (100) before the search's end below, so the export
        # shows it is the whole search, not one page
        decisions: dict[str, str | int] = {"kind": "decision", "limit": 1}
        until = time.monotonic() + 60
        while client.get("/api/v1/audit", params=decisions).json()["total"] <= 200:
            assert time.monotonic() < until, "the twin made no 200 decisions within 60 s"
            time.sleep(0.5)
    assert reasons
    page = logged_in(context, console_site, "supervisor")

    def with_a_new_reason(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        body["reasons"].append({"code": 999, "name": "TEST_ONLY_REASON"})
        route.fulfill(response=answer, json=body)

    # the reason dropdown lists what /reasons says, one a code and its name
    page.route("**/api/v1/reasons", with_a_new_reason)
    page.goto(f"{console_site.url}/audit")
    options = page.locator("#reason option")
    expect(options).to_have_count(1 + len(reasons) + 1)
    assert options.all_text_contents() == [
        "any",
        *(f"{r['code']} {human_reason(r['name'])}" for r in reasons),
        "999 Test only reason",
    ]
    assert [options.nth(i).get_attribute("value") for i in range(1, len(reasons) + 1)] == [
        str(r["code"]) for r in reasons
    ]
    page.unroute("**/api/v1/reasons")

    page.get_by_label("Decision").check()
    # up to a moment just gone, so the count of the search and of its download agree
    page.evaluate(
        """() => {
            const d = new Date(Date.now() - 2000);
            const pad = (n) => String(n).padStart(2, "0");
            document.querySelector("#filters [name=until]").value =
                `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
                `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
        }"""
    )
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"kind=decision"))
    rows = page.locator("#results tbody tr")
    expect(rows.first).to_contain_text("decision")
    expect(page.locator("#pager")).to_contain_text(re.compile(r"1–100 of [\d,]+"))
    total = int(page.locator("#total").inner_text().replace(",", ""))
    assert total > 100

    # the CSV link carries the filters, never a page: the download holds the whole search
    link = urlsplit(page.locator("#csv").get_attribute("href") or "")
    query = parse_qs(link.query)
    assert query.keys() == {"kind", "until", "format"}
    assert query["format"] == ["csv"]

    with page.expect_download() as download_info:
        page.locator("#csv").click()
    download = download_info.value
    assert download.suggested_filename.startswith("cargogate-audit-")
    with open(download.path(), encoding="utf-8") as file:
        text = file.read()
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == total, text[:200]
    assert {row["kind"] for row in table} == {"decision"}
    no_js_errors(page)


def test_trace_a_parcel_from_the_overview_and_an_unknown_hawb(
    console_site: ConsoleSite, context: Any
) -> None:
    page = logged_in(context, console_site, "viewer")
    page.goto(f"{console_site.url}/overview")
    first = page.locator("#open a").first
    expect(first).to_be_visible()
    first.click()  # the live list may reorder meanwhile: the HAWB is whichever was clicked
    expect(page).to_have_url(re.compile(r"/trace\?hawb="))
    hawb = parse_qs(urlparse(page.url).query)["hawb"][0]
    expect(page.locator(".trace-head h1")).to_have_text(hawb)
    timeline = page.locator("table.timeline")
    expect(timeline).to_contain_text("Scan")
    expect(timeline).to_contain_text("Decision")
    expect(timeline.locator(".reason").first).to_be_visible()
    # "since scan" counts the hub's clock (each record's ts), not the wall times
    expect(timeline.locator("thead")).to_contain_text("Since scan (hub s)")
    with console_site.login("viewer") as client:
        records = client.get(f"/api/v1/parcels/{hawb}").json()
    shown = timeline.locator("td.since-scan").all_inner_texts()
    assert 2 <= len(shown) <= len(records)
    assert [hub_seconds(text) for text in shown] == pytest.approx(
        [r["ts"] - records[0]["ts"] for r in records[: len(shown)]], abs=0.051
    )

    # the top bar names the site from the session: the trace page reads no overview
    with console_site.login("viewer") as client:
        site = client.get("/api/v1/session").json()["site"]
    expect(page.locator("#site-name")).to_have_text(site)
    assert api_requests(page, "/api/v1/overview") == []

    # a parcel released at its divert: closed after its hub seconds from scan to release
    # (the twin runs at twice real time here: the wall times are half as far apart)
    released = released_parcel(console_site)
    page.goto(f"{console_site.url}/trace?hawb={released['hawb']}")
    closed = page.locator(".trace-summary .closed-after")
    expect(closed).to_have_count(1)
    with console_site.login("viewer") as client:
        records = client.get(f"/api/v1/parcels/{released['hawb']}").json()
    took = released["ts"] - records[0]["ts"]
    text = closed.inner_text()
    match = re.fullmatch(r"closed after (\S+) \(hub s\)", text)
    assert match, text
    assert hub_seconds(match[1]) == pytest.approx(took, abs=0.051)
    walls = [datetime.fromisoformat(r["wall_time"]) for r in (records[0], released)]
    assert abs((walls[1] - walls[0]).total_seconds() - took) > 0.2, "hub and wall times agree"

    page.locator("#hawb").fill("NO-SUCH-HAWB-1")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"hawb=NO-SUCH-HAWB-1"))
    expect(page.locator(".notfound")).to_contain_text("No record of this HAWB")
    no_js_errors(page)


def hub_seconds(shown: str) -> float:
    """Hub seconds as the trace shows them (``+4.2``, ``−0.3``, ``1234``)."""
    return float(shown.strip().lstrip("+").replace("−", "-"))


def released_parcel(site: ConsoleSite) -> dict[str, Any]:
    """The journal entry of a parcel's release at its divert, the latest one (waiting for
    the twin to release one if need be)."""
    with site.login("supervisor") as client:
        until = time.monotonic() + 30
        while True:
            records = client.get(
                "/api/v1/audit", params={"kind": "confirmation", "limit": 50}
            ).json()["records"]
            for record in records:
                if record["state_to"] == "released":
                    return dict(record)
            assert time.monotonic() < until, "the twin released no parcel within 30 s"
            time.sleep(0.5)
