"""A real site for console tests: the demo's twin playing two lines in real time, the
console on a free port, the journal and users in a temporary SQLite file, one user per role.

``console_site`` runs the whole controller (``Services``) on a background thread's event
loop, exactly as ``cargogate run`` does, so HTTP clients and the browser talk to it over
loopback. Browser tests drive Debian's Chromium through Playwright (never a downloaded one)
and skip with the reason when it is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from controller.app.services import Services
from controller.app.site import parse_config
from controller.console.passwords import hash_password
from controller.core.users import Role, User
from controller.store.users import SqlUserDirectory

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "floor-password-1"
USERS = {role.value: role for role in Role}
"""One user per role, each named after it (``viewer``, ``operator`` ...)."""


@dataclass
class ConsoleSite:
    url: str
    services: Services
    loop: asyncio.AbstractEventLoop
    journal: Path

    def login(self, user: str, password: str = PASSWORD) -> httpx.Client:
        """An HTTP client logged in as ``user``, sending the CSRF token on every request."""
        answer = httpx.post(
            f"{self.url}/api/v1/session", json={"user": user, "password": password}, timeout=10
        )
        answer.raise_for_status()
        return httpx.Client(
            base_url=self.url,
            timeout=10,
            cookies=answer.cookies,
            headers={"X-CSRF-Token": answer.json()["csrf"]},
        )

    def call(self, work: Any) -> Any:
        """Run a coroutine on the site's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=30)


def console_config(tmp: Path, speed: float = 2.0, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    raw["store"] = {"journal_path": str(tmp / "journal.sqlite"), "group_commit_ms": 2}
    raw["commands"] = {"enabled": False}
    raw["console"] = {"port": 0, "live_every_s": 0.25}
    raw["review"] = {"type": "station"}
    raw["plant"]["speed"] = speed
    raw["plant"]["scenario"] = str(ROOT / "config/scenarios/demo-shift.yaml")
    raw.update(overrides)
    return raw


@contextlib.contextmanager
def serve_site(raw: dict[str, Any]) -> Iterator[ConsoleSite]:
    """Run the site ``raw`` describes (see :func:`console_config`) with one user per role,
    on a background thread's event loop, until the ``with`` block ends."""
    config = parse_config(raw)
    users = SqlUserDirectory(config.store.journal_path)
    for name, role in USERS.items():
        users.save_sync(User(name, role, hash_password(PASSWORD)))
    users.close()
    started = threading.Event()
    stop: asyncio.Event | None = None
    box: dict[str, Any] = {}

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with Services(config) as services:
            box["services"] = services
            box["loop"] = asyncio.get_running_loop()
            started.set()
            await services.run(stop=stop)

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced to the test below
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=thread_main, name="console site", daemon=True)
    thread.start()
    assert started.wait(120), "the console site did not start within 120 s"
    if "error" in box:
        raise box["error"]
    services: Services = box["services"]
    assert services.console is not None
    site = ConsoleSite(services.console.url, services, box["loop"], config.store.journal_path)
    try:
        yield site
    finally:
        assert stop is not None
        site.loop.call_soon_threadsafe(stop.set)
        thread.join(30)


@pytest.fixture(scope="module")
def console_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    with serve_site(console_config(tmp_path_factory.mktemp("console"))) as site:
        yield site


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's Chromium is not installed (apt-get install -y chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
