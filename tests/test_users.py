"""Console users: argon2 passwords, the users table on SQLite and PostgreSQL, `cargogate user`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import argon2
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner, Result

from controller.app.user_cli import users_app
from controller.console import passwords
from controller.console.passwords import (
    MIN_PASSWORD_LENGTH,
    check_password_strength,
    dummy_verify,
    hash_password,
    needs_rehash,
    verify_password,
)
from controller.core.domain import EntryKind, JournalEntry
from controller.core.users import Role, User, UserDirectory
from controller.store import migrate
from controller.store.journal import SqliteJournal
from controller.store.read import count_entries
from controller.store.schema import users_table
from controller.store.users import SqlUserDirectory, UnknownUserError, UserExistsError

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"

# --- passwords --------------------------------------------------------------------------------


def test_a_hash_verifies_its_password_and_no_other() -> None:
    h = hash_password(PASSWORD)
    assert h.startswith("$argon2id$")
    assert PASSWORD not in h
    assert verify_password(h, PASSWORD)
    assert not verify_password(h, PASSWORD + "!")
    assert not verify_password(h, "")
    assert hash_password(PASSWORD) != h  # a fresh salt every time


@pytest.mark.parametrize(
    "bad_hash",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=65536,t=3,p=4$AAAAAAAAAAAAAAAAAAAAAA",  # no digest
        "$argon2id$v=19$m=65536,t=3,p=4$zzz$yyy",
        "$2b$12$abcdefghijklmnopqrstuuE3Ey1Vh8l3wQeQ2s4fH1m5O8qQ9zjzG",  # bcrypt
        "é\udc80",
    ],
)
def test_a_malformed_hash_is_a_wrong_password_not_an_error(bad_hash: str) -> None:
    assert verify_password(bad_hash, PASSWORD) is False
    assert needs_rehash(bad_hash) is True


def test_a_password_that_cannot_be_encoded_is_wrong_not_an_error() -> None:
    assert verify_password(hash_password(PASSWORD), "lone \udc80 surrogate") is False


def test_a_hash_made_with_weaker_parameters_needs_a_rehash() -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    assert verify_password(weak, PASSWORD)  # still logs in ...
    assert needs_rehash(weak)  # ... and is replaced then
    assert not needs_rehash(hash_password(PASSWORD))


def test_an_unknown_user_costs_a_full_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dummy hash has today's parameters, so its verification takes as long as a real
    one; a hash that cannot be parsed is verified against it too."""
    params = argon2.extract_parameters
    assert params(passwords._dummy_hash()) == params(hash_password(PASSWORD))
    assert dummy_verify(PASSWORD) is False
    calls: list[str] = []
    real = passwords.dummy_verify

    def spy(password: str) -> bool:
        calls.append(password)
        return real(password)

    monkeypatch.setattr(passwords, "dummy_verify", spy)
    assert passwords.verify_password("garbage", PASSWORD) is False
    assert calls == [PASSWORD]


def test_short_passwords_are_refused_with_a_message() -> None:
    assert check_password_strength("x" * MIN_PASSWORD_LENGTH) is None
    message = check_password_strength("x" * (MIN_PASSWORD_LENGTH - 1))
    assert message is not None
    assert "too short" in message
    assert str(MIN_PASSWORD_LENGTH) in message
    assert check_password_strength("") is not None


# --- the users table --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file not yet created, or a PostgreSQL database of this test
    alone (``pg_url`` creates and drops it, so reruns start clean)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'new' / 'journal.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    return url


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory(db_url: str, clock: Clock) -> Iterator[SqlUserDirectory]:
    with SqlUserDirectory(db_url, clock=clock) as users:
        yield users


async def test_users_are_saved_replaced_and_listed(
    directory: SqlUserDirectory, clock: Clock
) -> None:
    users: UserDirectory = directory  # it is a UserDirectory
    assert await users.get("alice") is None
    assert await users.all() == []
    alice = User("alice", Role.ADMIN, hash_password(PASSWORD))
    await users.save(alice)
    await users.save(User("bob", Role.OPERATOR, "h-bob", active=False))
    assert await users.get("alice") == alice
    assert [u.name for u in await users.all()] == ["alice", "bob"]

    clock.now += timedelta(hours=1)
    await users.save(User("alice", Role.OFFICER, "h-2", active=False))  # replaces
    assert await users.get("alice") == User("alice", Role.OFFICER, "h-2", active=False)
    record = directory.record_sync("alice")
    assert record is not None
    assert record.created_at == datetime(2026, 12, 7, 6, 0, tzinfo=UTC)  # kept
    assert record.changed_at == datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
    assert len(await users.all()) == 2


async def test_many_logins_at_once(directory: SqlUserDirectory) -> None:
    directory.save_sync(User("alice", Role.VIEWER, "h"))
    found = await asyncio.gather(*(directory.get("alice") for _ in range(50)))
    assert {u.name for u in found if u is not None} == {"alice"}
    assert len(found) == 50


def test_add_refuses_a_taken_name_and_update_an_unknown_one(
    directory: SqlUserDirectory, clock: Clock
) -> None:
    directory.add_sync(User("alice", Role.VIEWER, "h1"))
    with pytest.raises(UserExistsError, match="alice"):
        directory.add_sync(User("alice", Role.ADMIN, "h2"))
    assert directory.get_sync("alice") == User("alice", Role.VIEWER, "h1")  # untouched
    with pytest.raises(UnknownUserError, match="nobody"):
        directory.update_sync("nobody", active=False)

    clock.now += timedelta(minutes=5)
    record = directory.update_sync("alice", role=Role.SUPERVISOR, active=False)
    assert record.user == User("alice", Role.SUPERVISOR, "h1", active=False)
    assert record.changed_at - record.created_at == timedelta(minutes=5)
    record = directory.update_sync("alice", password_hash="h3", active=True)
    assert record.user == User("alice", Role.SUPERVISOR, "h3", active=True)


def test_an_unknown_role_reads_as_an_inactive_viewer(
    directory: SqlUserDirectory, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory.save_sync(User("root", Role.ADMIN, "h"))
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:  # a newer release's role, or a hand edit
            conn.execute(sa.update(users_table).values(role="superuser"))
    finally:
        engine.dispose()
    with caplog.at_level(logging.WARNING, logger="controller.store.users"):
        user = directory.get_sync("root")
        everyone = directory.all_sync()
    assert user == User("root", Role.VIEWER, "h", active=False)
    assert everyone == [user]
    assert "unknown role 'superuser'" in caplog.text
    record = directory.record_sync("root")
    assert record is not None
    assert (record.stored_role, record.role_known) == ("superuser", False)
    # giving it a role again makes it whole
    assert directory.update_sync("root", role=Role.ADMIN).user == User("root", Role.ADMIN, "h")


def test_a_fresh_sqlite_file_is_created_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "var" / "site" / "journal.sqlite"
    with SqlUserDirectory(path) as users:
        assert users.get_sync("anyone") is None
    assert path.is_file()
    assert migrate.current_revision(f"sqlite:///{path}") == migrate.head_revision()


def test_refuses_a_backend_it_does_not_support() -> None:
    with pytest.raises(ValueError, match="mysql"):
        SqlUserDirectory("mysql://db/cargogate")


async def test_users_share_the_file_with_a_running_journal(tmp_path: Path) -> None:
    """The console edits users while the journal writer commits to the same file."""
    path = tmp_path / "journal.sqlite"
    entry = JournalEntry(1.0, EntryKind.ALARM, "L1", 0, data={"source": "test"})
    async with SqliteJournal(path, "HUB1") as journal:
        with SqlUserDirectory(path) as users:
            await journal.write([entry])
            await users.save(User("alice", Role.OPERATOR, "h"))
            await journal.write([entry])
            assert await users.get("alice") == User("alice", Role.OPERATOR, "h")
    assert count_entries(path) == 2


# --- cargogate user ---------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The demo site with its journal in ``tmp_path``."""
    raw = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    raw["store"]["journal_path"] = str(tmp_path / "var" / "journal.sqlite")
    raw["plant"]["scenario"] = str(ROOT / "config" / raw["plant"]["scenario"])
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def journal_of(site: Path) -> Path:
    return site.parent / "var" / "journal.sqlite"


def user(*args: str | Path, input: str | None = None) -> Result:
    return runner.invoke(users_app, [str(a) for a in args], input=input, terminal_width=200)


def said(result: Result) -> str:
    return " ".join(result.output.split())


def refused(result: Result, *words: str) -> None:
    """Exit 2 with one message line (on stderr) naming ``words``, and no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.output
    for word in words:
        assert word in " ".join(result.stderr.split())


def stored(site: Path, name: str) -> User | None:
    with SqlUserDirectory(journal_of(site)) as users:
        return users.get_sync(name)


def test_add_list_and_change_users(site: Path) -> None:
    result = user("add", "alice", "--role", "admin", "--site", site, "--password-stdin",
                  input=PASSWORD + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "added alice as admin" in said(result)
    alice = stored(site, "alice")
    assert alice is not None
    assert (alice.role, alice.active) == (Role.ADMIN, True)
    assert verify_password(alice.password_hash, PASSWORD)  # the hash, never the password

    # asked for twice, hidden
    result = user("add", "bob", "--role", "Operator", "--site", site,
                  input=f"{PASSWORD}-bob\n{PASSWORD}-bob\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Once more" in result.output
    assert PASSWORD not in result.output
    bob = stored(site, "bob")
    assert bob is not None
    assert bob.role is Role.OPERATOR
    assert verify_password(bob.password_hash, f"{PASSWORD}-bob")

    result = user("role", "bob", "officer", "--site", site)
    assert result.exit_code == 0, result.output
    assert "bob (officer, active)" in said(result)
    result = user("disable", "bob", "--site", site)
    assert result.exit_code == 0, result.output
    assert stored(site, "bob") == User("bob", Role.OFFICER, bob.password_hash, active=False)

    result = user("list", "--site", site)
    assert result.exit_code == 0, result.output
    rows = [line.strip("│ ").split() for line in result.output.splitlines() if "│" in line]
    assert [[c for c in row if c != "│"] for row in rows] == [
        ["alice", "admin", "yes"],
        ["bob", "officer", "no"],
    ]

    assert user("enable", "bob", "--site", site).exit_code == 0
    assert stored(site, "bob") == User("bob", Role.OFFICER, bob.password_hash, active=True)
    result = user("passwd", "bob", "--site", site, "--password-stdin", input="a new passphrase\n")
    assert result.exit_code == 0, result.output
    new = stored(site, "bob")
    assert new is not None
    assert verify_password(new.password_hash, "a new passphrase")
    assert not verify_password(new.password_hash, f"{PASSWORD}-bob")


def test_adding_a_taken_name_is_refused(site: Path) -> None:
    args = ("add", "alice", "--role", "viewer", "--site", site, "--password-stdin")
    assert user(*args, input=PASSWORD + "\n").exit_code == 0
    refused(user(*args, input="another password\n"), "'alice'", "already exists")
    alice = stored(site, "alice")
    assert alice is not None
    assert verify_password(alice.password_hash, PASSWORD)  # untouched


def test_a_bad_role_is_named(site: Path) -> None:
    refused(user("add", "bob", "--role", "boss", "--site", site), "unknown role 'boss'", "admin")
    assert not journal_of(site).exists()  # refused before anything was made
    assert user("add", "bob", "--role", "viewer", "--site", site, "--password-stdin",
                input=PASSWORD + "\n").exit_code == 0  # fmt: skip
    refused(user("role", "bob", "root", "--site", site), "unknown role 'root'")
    assert stored(site, "bob") is not None


def test_a_short_password_is_refused(site: Path) -> None:
    refused(
        user("add", "bob", "--role", "viewer", "--site", site, "--password-stdin", input="short\n"),
        "too short",
        str(MIN_PASSWORD_LENGTH),
    )
    assert stored(site, "bob") is None
    asked = user("add", "bob", "--role", "viewer", "--site", site, input="short\n")
    refused(asked, "too short")
    assert "Once more" not in asked.output  # refused before asking again
    differ = user("add", "bob", "--role", "viewer", "--site", site, input=f"{PASSWORD}\nother\n")
    refused(differ, "differ")
    assert stored(site, "bob") is None


def test_unknown_users_missing_sites_and_bad_names_are_named(site: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    refused(user("list", "--site", missing), "no site file", "nowhere.yaml")
    refused(user("add", "x", "--role", "viewer", "--site", missing), "nowhere.yaml")
    refused(user("disable", "ghost", "--site", site), "no users yet", "journal.sqlite")
    assert user("add", "alice", "--role", "viewer", "--site", site, "--password-stdin",
                input=PASSWORD + "\n").exit_code == 0  # fmt: skip
    for verb in ("disable", "enable", "passwd"):
        refused(user(verb, "ghost", "--site", site), "no user named 'ghost'")
    refused(user("role", "ghost", "admin", "--site", site), "no user named 'ghost'")
    refused(user("add", "two words", "--role", "viewer", "--site", site), "'two words'")


def test_list_of_a_new_site_creates_nothing(site: Path) -> None:
    result = user("list", "--site", site)
    assert result.exit_code == 0, result.output
    assert "no users yet" in said(result)
    assert not journal_of(site).exists()


def test_every_command_explains_itself() -> None:
    result = user("--help")
    assert result.exit_code == 0
    for verb in ("add", "passwd", "role", "disable", "enable", "list"):
        assert verb in result.output
        help_text = said(user(verb, "--help"))
        assert "--site" in help_text
        assert "Exit code" in help_text
    assert "--password-stdin" in said(user("add", "--help"))
