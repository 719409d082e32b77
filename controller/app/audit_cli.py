"""``cargogate audit verify JOURNAL|URL [--site S]``: check the journal's hash chain.

The checking is :func:`controller.store.chain.verify`; this module only prints its answer,
one line per site. Exit codes: 0 every chain verifies, 1 a chain is broken (its line names
the site, the first broken ``seq`` and what is wrong), 2 the journal cannot be read (one line
says why: no such file, a bad URL, an unreachable server, a journal without a chain yet).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from controller.app.terminal import console, errors
from controller.store.chain import JournalSourceError, SiteChain, verify

audit_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")


@audit_app.callback()
def audit() -> None:
    """The audit journal's tamper evidence: verify its hash chain, site by site."""


@audit_app.command("verify")
def verify_command(
    journal: Annotated[
        str,
        typer.Argument(
            metavar="JOURNAL|URL",
            help="A site's journal file (the site file's store.journal_path) or a database "
            "URL, e.g. postgresql://audit@db.example/central for the central copy.",
            show_default=False,
        ),
    ],
    site: Annotated[
        str | None,
        typer.Option("--site", help="Verify this site only (default: every site).", metavar="S"),
    ] = None,
) -> None:
    """Check every entry: seq contiguous from 1, each hash recomputed, each prev_hash the hash
    of the entry before. Exit 0: all verify; 1: a chain is broken; 2: cannot read the journal.
    """
    try:
        chains = verify(journal, site)
    except JournalSourceError as exc:
        errors.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(code=2) from None
    if not chains:
        console.print("no journal entries", highlight=False)
    for chain in chains:
        console.print(_line(chain), soft_wrap=True, highlight=False)
    if not all(chain.ok for chain in chains):
        raise typer.Exit(code=1)


def _line(chain: SiteChain) -> str:
    site = escape(chain.site)
    if chain.broken is None:
        unsealed = (
            f"; seq 1..{chain.unsealed} predate the chain and are unsealed"
            if chain.unsealed
            else ""
        )
        return (
            f"{site}: [green]OK[/green] {chain.entries} entries (seq 1..{chain.last_seq}{unsealed})"
        )
    return (
        f"{site}: [red]BROKEN at seq {chain.broken.seq}[/red]: {escape(chain.broken.problem)} "
        f"({chain.entries} entries verified before it)"
    )
