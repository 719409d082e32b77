"""``cargogate user add|passwd|role|disable|enable|list``: the floor console's users.

The users live in the site's journal database (the site file's ``store.journal_path``), so
these commands take the site file, like ``cargogate run``. Passwords are asked for hidden
and twice, or read from standard input for scripts; only argon2 hashes are stored. Exit
codes: 0 done, 1 the database failed (the message says why), 2 a mistake in the command (the
message names the value).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from alembic.util import CommandError
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from controller.app.site import load_config
from controller.app.terminal import console, errors, print_problems
from controller.console.passwords import check_password_strength, hash_password
from controller.core.settings import ConfigError
from controller.core.users import PERMISSIONS, Permission, Role, User
from controller.store.users import (
    SqlUserDirectory,
    UnknownUserError,
    UserExistsError,
    UserRecord,
)

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 64
_ROLE_NAMES = ", ".join(role.value for role in Role)
_ROLES_HELP = "\n".join(
    f"* **{role.value}**: {', '.join(p.value for p in Permission if p in PERMISSIONS[role])}"
    for role in Role
)
_EXITS = "Exit code 0: done; 1: the database failed; 2: a mistake in the command (it is named)."

users_app = typer.Typer(
    help=(
        "Console users: who may log in to the floor console, and in which role.\n\n"
        "The users are kept in the site's journal database (the site file's "
        "store.journal_path). What each role may do:\n\n" + _ROLES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)

SiteOption = Annotated[
    Path,
    typer.Option(
        "--site",
        help="Site file (YAML), e.g. config/demo.yaml: the users live in its journal database.",
        show_default=False,
    ),
]
Name = Annotated[str, typer.Argument(help="The login name, e.g. jdoe.", show_default=False)]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input instead of asking "
        "(for scripts; it never appears on the command line).",
    ),
]


# --- what every command shares ----------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    """A mistake in the command: one red line, exit 2. ``message`` is already escaped."""
    errors.print(f"[red]{message}[/red]", soft_wrap=True)
    raise typer.Exit(code=2)


def _shown(value: str) -> str:
    return escape(repr(value))


def _journal_path(site: Path) -> Path:
    """The site file's journal database; a missing or invalid site file is exit 2."""
    if not site.is_file():
        _fail(f"no site file at {_shown(str(site))}")
    try:
        config = load_config(site)
    except ConfigError as exc:
        print_problems(exc)
        raise typer.Exit(code=2) from None
    return config.store.journal_path


@contextlib.contextmanager
def _users(site: Path, *, create: bool = False) -> Iterator[SqlUserDirectory]:
    """The site's users. Only ``create`` may make a new journal database (``user add``):
    the others find no users in a database that is not there."""
    journal = _journal_path(site)
    if not create and not journal.is_file():
        _fail(
            f"no users yet: the journal database {_shown(str(journal))} of {escape(str(site))} "
            "does not exist (`cargogate user add` creates it)"
        )
    directory = SqlUserDirectory(journal)
    try:
        yield directory
    except (SQLAlchemyError, OSError, CommandError) as exc:
        log.debug("user database failed", exc_info=exc)
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        errors.print(
            f"[red]cannot use the user database {escape(str(journal))}:[/red] "
            f"{escape(str(reason).splitlines()[0] if str(reason) else type(reason).__name__)}",
            soft_wrap=True,
        )
        raise typer.Exit(code=1) from None
    finally:
        directory.close()


def _role(value: str) -> Role:
    for role in Role:
        if role.value == value.strip().lower():
            return role
    _fail(f"unknown role {_shown(value)}: use one of {_ROLE_NAMES}")


def _name(value: str) -> str:
    if (
        not value
        or len(value) > MAX_NAME_LENGTH
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        _fail(
            f"bad user name {_shown(value)}: 1 to {MAX_NAME_LENGTH} printable characters, no spaces"
        )
    return value


def _new_password(name: str, from_stdin: bool) -> str:
    """A password that passes the length rule: read from stdin, or asked for hidden and then
    once more to confirm (the length is checked before the second time)."""
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = str(typer.prompt(f"Password for {name}", hide_input=True))
    problem = check_password_strength(password)
    if problem is not None:
        _fail(escape(problem))
    if not from_stdin and str(typer.prompt("Once more", hide_input=True)) != password:
        _fail("the two passwords differ; nothing was changed")
    return password


def _existing(users: SqlUserDirectory, name: str, site: Path) -> UserRecord:
    record = users.record_sync(name)
    if record is None:
        _fail(f"no user named {_shown(name)} at site {escape(str(site))}")
    return record


def _update(
    users: SqlUserDirectory,
    name: str,
    site: Path,
    *,
    role: Role | None = None,
    password_hash: str | None = None,
    active: bool | None = None,
) -> UserRecord:
    try:
        return users.update_sync(name, role=role, password_hash=password_hash, active=active)
    except UnknownUserError:
        _fail(f"no user named {_shown(name)} at site {escape(str(site))}")


def _state(record: UserRecord) -> str:
    """``name (role, active)`` as a person reads it."""
    role = record.stored_role if record.role_known else f"unknown role {record.stored_role!r}"
    active = "active" if record.user.active else "disabled"
    return escape(f"{record.user.name} ({role}, {active})")


def _warn_if_locked_out(record: UserRecord) -> None:
    if not record.role_known:
        errors.print(
            f"[yellow]{_shown(record.user.name)} has the unknown role "
            f"{_shown(record.stored_role)} and cannot log in until given one: "
            f"`cargogate user role {escape(record.user.name)} ROLE`[/yellow]",
            soft_wrap=True,
        )


def _warn_if_no_admin(users: SqlUserDirectory) -> None:
    if not any(record.user.may(Permission.USERS) for record in users.records_sync()):
        errors.print(
            "[yellow]no active admin is left: nobody can manage users from the console "
            "(`cargogate user` still can)[/yellow]",
            soft_wrap=True,
        )


# --- the commands -----------------------------------------------------------------------------


@users_app.command("add", epilog=_EXITS)
def add(
    name: Name,
    role: Annotated[
        str, typer.Option("--role", help=f"One of: {_ROLE_NAMES}.", show_default=False)
    ],
    site: SiteOption,
    password_stdin: PasswordStdin = False,
) -> None:
    """Add a console user with a role and a password (at least 10 characters).

    Asks for the password twice, hidden, unless --password-stdin. Refused if the name is
    taken: change an existing user with `passwd`, `role`, `enable` or `disable`.
    """
    name, new_role = _name(name), _role(role)
    with _users(site, create=True) as users:
        if users.record_sync(name) is not None:
            _fail(f"a user named {_shown(name)} already exists at site {escape(str(site))}")
        password_hash = hash_password(_new_password(name, password_stdin))
        try:
            users.add_sync(User(name=name, role=new_role, password_hash=password_hash))
        except UserExistsError:
            _fail(f"a user named {_shown(name)} already exists at site {escape(str(site))}")
    console.print(f"[green]added[/green] {escape(name)} as {new_role.value}")


@users_app.command("passwd", epilog=_EXITS)
def passwd(name: Name, site: SiteOption, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (at least 10 characters); the old one stops working at once.

    Asks for the new password twice, hidden, unless --password-stdin.
    """
    with _users(site) as users:
        _existing(users, name, site)
        password_hash = hash_password(_new_password(name, password_stdin))
        record = _update(users, name, site, password_hash=password_hash)
    console.print(f"[green]password changed[/green] for {_state(record)}")


@users_app.command("role", epilog=_EXITS)
def set_role(
    name: Name,
    role: Annotated[str, typer.Argument(help=f"One of: {_ROLE_NAMES}.", show_default=False)],
    site: SiteOption,
) -> None:
    """Give a user another role; it applies from the user's next request."""
    new_role = _role(role)
    with _users(site) as users:
        record = _update(users, name, site, role=new_role)
        _warn_if_no_admin(users)
    console.print(f"[green]role set[/green]: {_state(record)}")


@users_app.command("disable", epilog=_EXITS)
def disable(name: Name, site: SiteOption) -> None:
    """Lock a user out of the console, keeping the name, role and password for `enable`."""
    with _users(site) as users:
        record = _update(users, name, site, active=False)
        _warn_if_no_admin(users)
    console.print(f"[green]disabled[/green] {_state(record)}")


@users_app.command("enable", epilog=_EXITS)
def enable(name: Name, site: SiteOption) -> None:
    """Let a disabled user log in again, with the role and password they had."""
    with _users(site) as users:
        record = _update(users, name, site, active=True)
    console.print(f"[green]enabled[/green] {_state(record)}")
    _warn_if_locked_out(record)


@users_app.command("list", epilog=_EXITS)
def list_users(site: SiteOption) -> None:
    """List the site's console users: name, role and whether they may log in."""
    journal = _journal_path(site)
    if not journal.is_file():
        console.print(f"no users yet at site {escape(str(site))} (no database at {journal})")
        return
    with _users(site) as users:
        records = users.records_sync()
    if not records:
        console.print(f"no users yet at site {escape(str(site))}")
        return
    console.print(f"{len(records)} user(s) in {escape(str(journal))}", soft_wrap=True)
    table = Table()
    table.add_column("name")
    table.add_column("role")
    table.add_column("active")
    for record in records:
        role = (
            escape(record.stored_role)
            if record.role_known
            else f"[red]{escape(record.stored_role)} (unknown: cannot log in)[/red]"
        )
        active = "[green]yes[/green]" if record.user.active else "[red]no[/red]"
        table.add_row(escape(record.user.name), role, active)
    console.print(table)
