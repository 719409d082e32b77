"""Fixtures shared across the suite."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from controller.core.clock import SettlingLoop

PG_ENV = "CARGOGATE_TEST_PG_URL"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a PostgreSQL database made for this test alone, dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"set {PG_ENV} to run PostgreSQL tests")
    name = f"cargogate_t_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every test loop can tell when it is idle, so simulated time (ManualClock, the twin's
    full fidelity) moves on only once everything due has run."""
    return {"settling": SettlingLoop}
