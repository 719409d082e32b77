"""The console's HTTP API against a running site: sessions, roles, reads, actions, errors."""

from __future__ import annotations

import asyncio
import csv
import io
import time

import httpx
import pytest

from controller.console.passwords import hash_password
from controller.core.users import Role, User
from tests.console.conftest import PASSWORD, ConsoleSite


def test_health_needs_no_login_and_reports_links(console_site: ConsoleSite) -> None:
    answer = httpx.get(f"{console_site.url}/api/v1/health")
    assert answer.status_code in (200, 503)
    assert answer.json()["status"] in ("ok", "degraded")


def test_reads_need_a_login(console_site: ConsoleSite) -> None:
    answer = httpx.get(f"{console_site.url}/api/v1/overview")
    assert answer.status_code == 401
    assert answer.json() == {"error": "log in first", "field": None}


def test_wrong_password_is_401_and_repeated_failures_are_limited(console_site: ConsoleSite) -> None:
    with httpx.Client(base_url=console_site.url) as client:
        codes = [
            client.post(
                "/api/v1/session", json={"user": "nobody", "password": "x" * 12}
            ).status_code
            for _ in range(7)
        ]
    assert codes[0] == 401
    assert codes[-1] == 429


def test_session_cookie_is_httponly_and_strict(console_site: ConsoleSite) -> None:
    answer = httpx.post(
        f"{console_site.url}/api/v1/session", json={"user": "viewer", "password": PASSWORD}
    )
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert answer.json()["role"] == "viewer"


def test_overview_shows_the_twins_parcels_flowing(console_site: ConsoleSite) -> None:
    with console_site.login("viewer") as client:
        first = client.get("/api/v1/overview").json()
        later = first
        until = time.monotonic() + 20
        while later["kpis"]["decisions"] <= first["kpis"]["decisions"] + 5:
            assert time.monotonic() < until, "no parcels decided within 20 s"
            time.sleep(0.5)
            later = client.get("/api/v1/overview").json()
    assert [line["line"] for line in later["lines"]] == ["L1", "L2"]
    lanes = {lane["id"]: lane["kind"] for lane in later["lines"][0]["lanes"]}
    assert lanes == {1: "release", 2: "inspection", 3: "inspection", 9: "exception"}


def test_a_viewer_is_refused_an_action_with_403(console_site: ConsoleSite) -> None:
    with console_site.login("viewer") as client:
        answer = client.post("/api/v1/holds", json={"hawb": "HOLDME1", "reason": "test"})
    assert answer.status_code == 403
    assert "viewer may not hold" in answer.json()["error"]


def test_an_action_without_the_csrf_header_is_refused(console_site: ConsoleSite) -> None:
    with console_site.login("operator") as client:
        del client.headers["X-CSRF-Token"]
        answer = client.post("/api/v1/holds", json={"hawb": "HOLDME2", "reason": "test"})
    assert answer.status_code == 403
    assert "X-CSRF-Token" in answer.json()["error"]


def test_hold_place_list_lift_and_the_audit_names_the_user(console_site: ConsoleSite) -> None:
    with console_site.login("operator") as client:
        placed = client.post("/api/v1/holds", json={"hawb": "HOLDME3", "reason": "x-ray query"})
        assert placed.status_code == 200, placed.text
        again = client.post("/api/v1/holds", json={"hawb": "HOLDME3", "reason": "twice"})
        assert again.status_code == 409
        assert "already held by operator" in again.json()["error"]
        held = client.get("/api/v1/holds").json()
        assert {"hawb": "HOLDME3", "user": "operator"}.items() <= next(
            h for h in held if h["hawb"] == "HOLDME3"
        ).items()
        lifted = client.post("/api/v1/holds/HOLDME3/lift", json={"reason": "cleared by phone"})
        assert lifted.status_code == 200
        assert all(h["hawb"] != "HOLDME3" for h in client.get("/api/v1/holds").json())
    with console_site.login("supervisor") as client:
        page = client.get("/api/v1/audit", params={"hawb": "HOLDME3", "kind": "command"}).json()
    commands = [(r["data"]["command"], r["user"], r["data"]["accepted"]) for r in page["records"]]
    assert ("hold", "operator", True) in commands
    assert ("lift", "operator", True) in commands


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hawb": "", "reason": "r"}, "hawb"),
        ({"hawb": "OK1", "reason": ""}, "reason"),
        ({"hawb": "OK1", "reason": "r", "extra": 1}, "extra"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    console_site: ConsoleSite, body: dict[str, object], field: str
) -> None:
    with console_site.login("operator") as client:
        answer = client.post("/api/v1/holds", json=body)
    assert answer.status_code == 422
    assert answer.json()["field"] == field


def test_malformed_json_is_a_clear_422(console_site: ConsoleSite) -> None:
    with console_site.login("operator") as client:
        answer = client.post(
            "/api/v1/holds", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 422
    assert "not valid JSON" in answer.json()["error"]


def test_inspection_of_a_parcel_not_at_inspection_is_409(console_site: ConsoleSite) -> None:
    with console_site.login("officer") as client:
        answer = client.post(
            "/api/v1/inspections", json={"hawb": "NEVERSEEN", "outcome": "cleared"}
        )
    assert answer.status_code == 409
    assert "waits at inspection" in answer.json()["error"]


def test_unknown_hawb_trace_is_404(console_site: ConsoleSite) -> None:
    with console_site.login("viewer") as client:
        answer = client.get("/api/v1/parcels/NO-SUCH-HAWB")
    assert answer.status_code == 404
    assert "NO-SUCH-HAWB" in answer.json()["error"]


def test_an_officer_may_not_search_the_audit(console_site: ConsoleSite) -> None:
    with console_site.login("officer") as client:
        assert client.get("/api/v1/audit").status_code == 403


def test_an_officer_closes_a_parcel_waiting_at_inspection_and_sees_its_clearance_time(
    console_site: ConsoleSite,
) -> None:
    """The twin's own inspection stations work the same queue: a parcel they close first is
    a 409 (refused, journalled), so try the waiting parcels until one is ours."""
    until = time.monotonic() + 40
    with console_site.login("officer") as client:
        while time.monotonic() < until:
            waiting = [
                p
                for p in client.get("/api/v1/parcels/open").json()
                if p["state"] == "in_inspection"
            ]
            for parcel in waiting:
                answer = client.post(
                    "/api/v1/inspections",
                    json={"hawb": parcel["hawb"], "outcome": "seized", "note": "blade in a shoe"},
                )
                if answer.status_code == 200:
                    body = answer.json()
                    assert body["accepted"] is True
                    assert body["clearance_s"] > 0
                    trace = client.get(f"/api/v1/parcels/{parcel['hawb']}").json()
                    assert trace[-1]["state_to"] == "seized"
                    assert any(r["user"] == "officer" for r in trace)
                    return
                assert answer.status_code == 409, answer.text
            time.sleep(0.5)
    pytest.fail("no parcel waited at inspection within 40 s")


def test_a_verdict_for_a_tracking_id_that_names_another_hawb_is_refused(
    console_site: ConsoleSite,
) -> None:
    """The officer saw one parcel; the verdict must not land on another under the same id."""
    until = time.monotonic() + 30
    with console_site.login("officer") as client:
        while time.monotonic() < until:
            waiting = client.get("/api/v1/reviews").json()
            if waiting:
                review = waiting[0]
                url = f"/api/v1/lines/{review['line']}/parcels/{review['tracking_id']}/verdict"
                answer = client.post(url, json={"outcome": "clear", "hawb": "SOMEONE-ELSE"})
                assert answer.status_code == 409
                assert (
                    "another parcel" in answer.json()["error"]
                    or "not awaiting" in (answer.json()["error"])
                )
                return
            time.sleep(0.2)
    pytest.fail("no parcel waited for review within 30 s")


def test_concurrent_wrong_passwords_cannot_pass_the_limit_together(
    console_site: ConsoleSite,
) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=console_site.url, timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post("/api/v1/session", json={"user": "admin", "password": "x" * 12})
                    for _ in range(20)
                )
            )
        return [a.status_code for a in answers]

    codes = asyncio.run(burst())
    assert codes.count(401) <= 5  # the per-minute limit, however many come at once
    assert set(codes) <= {401, 429, 503}
    # the admin can still log in from another address: the lockout is per account and address
    # (every test client here shares 127.0.0.1, so only the count above is checked)


def test_a_disabled_user_loses_the_open_session(console_site: ConsoleSite) -> None:
    from controller.store.users import SqlUserDirectory

    users = SqlUserDirectory(console_site.journal)
    users.save_sync(User("temp-officer", Role.OFFICER, hash_password(PASSWORD)))
    with console_site.login("temp-officer") as client:
        assert client.get("/api/v1/session").status_code == 200
        users.update_sync("temp-officer", active=False)
        users.close()
        sessions = console_site.services.console.app.state.ctx.sessions  # type: ignore[union-attr]
        sessions.recheck_s = 0.0
        assert client.get("/api/v1/session").status_code == 401


def test_the_csv_export_carries_every_match_once_across_pages(
    console_site: ConsoleSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 50 while the twin keeps writing: every row once, none repeated."""
    from controller.console import api

    monkeypatch.setattr(api, "MAX_LIMIT", 50)
    with console_site.login("supervisor") as client:
        until = time.monotonic() + 60
        while client.get("/api/v1/audit", params={"kind": "decision"}).json()["total"] <= 120:
            assert time.monotonic() < until, "fewer than 120 decisions within 60 s"
            time.sleep(0.5)
        answer = client.get("/api/v1/audit", params={"kind": "decision", "format": "csv"})
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    seqs = [int(row["seq"]) for row in rows]
    assert len(rows) > 100  # several pages
    assert len(seqs) == len(set(seqs))
    assert seqs == sorted(seqs, reverse=True)
    assert {row["kind"] for row in rows} == {"decision"}


def test_every_answer_forbids_foreign_scripts_and_framing(console_site: ConsoleSite) -> None:
    for path in ("/login", "/api/v1/health", "/static/common.js"):
        headers = httpx.get(f"{console_site.url}{path}").headers
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert headers["x-content-type-options"] == "nosniff"
