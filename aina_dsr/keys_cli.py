"""``aina-dsr keys``: make a key, move the stored data to a new one, prove the old one unneeded.

The steps of a rotation while the desk runs, and what they do to indexes and
the audit log's signatures, are :mod:`workflows.privacy.key_rotation`'s; this
module reads the settings, runs them and says what was found.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from cryptography.fernet import Fernet

from aina_dsr.settings import SettingsError, encryption_keys_or_dev, load_settings
from aina_dsr.wiring import open_core
from workflows.privacy.key_rotation import AUDIT, TableCount, check_keys, rotate_keys

keys_app = typer.Typer(help="Encryption keys: make, rotate, check.", no_args_is_help=True)


def _echo(line: str) -> None:
    typer.echo(f"aina-dsr: {line}", err=True)


def _say_broken(results: dict[str, TableCount]) -> None:
    broken = results[AUDIT].broken
    if broken:
        _echo(
            f"{AUDIT}: {broken} event(s) do not hold under any configured key and are "
            "left as they are: run `aina-dsr audit verify`"
        )


async def _rotate(batch: int | None) -> dict[str, TableCount]:
    settings = load_settings()
    keys = encryption_keys_or_dev(settings)
    if len(keys) < 2:
        raise SettingsError(
            "DSR_ENCRYPTION_KEY",
            "holds one key: put the new key first and the old one after it (NEW,OLD), "
            "restart the desk with that, then rotate",
        )
    async with open_core(settings) as core:
        results = await rotate_keys(
            core.engine, core.sessions, core.vault, keys, batch=batch, progress=_echo
        )
    _say_broken(results)
    return results


async def _check(batch: int | None) -> tuple[int, dict[str, TableCount]]:
    settings = load_settings()
    keys = encryption_keys_or_dev(settings)
    # Which values a key reads is this command's own question, answered value by value.
    async with open_core(settings, check_key=False) as core:
        results = await check_keys(core.engine, core.sessions, core.vault, keys, batch=batch)
    _say_broken(results)
    return len(keys), results


BatchOption = Annotated[
    int | None,
    typer.Option("--batch", min=1, max=10000, help="Rows per transaction (default 100, files 10)."),
]


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new encryption key for DSR_ENCRYPTION_KEY."""
    print(Fernet.generate_key().decode())
    _echo(
        "put it in .env as DSR_ENCRYPTION_KEY=<key> and keep a copy safe: "
        "without it the stored personal data cannot be read"
    )


@keys_app.command("rotate")
def keys_rotate(batch: BatchOption = None) -> None:
    """Re-encrypt the stored data under the first key of DSR_ENCRYPTION_KEY (NEW,OLD)."""
    results = asyncio.run(_rotate(batch))
    for name, count in results.items():
        _echo(
            f"{name}: {count.rows} row(s), {count.reencrypted} value(s) re-encrypted, "
            f"{count.indexes} index(es) recomputed"
            + (f", {count.resigned} signature(s) renewed" if name == AUDIT else "")
        )
    unreadable = sum(c.unreadable for c in results.values())
    meanwhile = sum(c.changed_meanwhile for c in results.values())
    unmatched = sum(c.unmatched_indexes for c in results.values())
    print(
        f"rotated: {sum(c.reencrypted for c in results.values())} value(s) re-encrypted, "
        f"{sum(c.indexes for c in results.values())} index(es) recomputed, "
        f"{sum(c.tokens for c in results.values())} value(s) in all"
    )
    if unmatched:
        _echo(f"{unmatched} index(es) match their value under no configured key: left as they are")
    if unreadable:
        _echo(f"{unreadable} value(s) cannot be read with any configured key: left as they are")
    if meanwhile:
        _echo(f"{meanwhile} row(s) changed while being rotated: run `aina-dsr keys rotate` again")
    if unreadable or meanwhile:
        raise typer.Exit(1)
    _echo("now run `aina-dsr keys check`; when it passes, drop the old key from DSR_ENCRYPTION_KEY")


@keys_app.command("check")
def keys_check(batch: BatchOption = None) -> None:
    """Prove every stored value reads with the first key alone (exit 0), or name what does not."""
    configured, results = asyncio.run(_check(batch))
    tokens = sum(c.tokens for c in results.values())
    old = sum(c.old_key for c in results.values())
    unreadable = sum(c.unreadable for c in results.values())
    stale = sum(c.stale_indexes for c in results.values())
    if not (old or unreadable or stale):
        print(f"all {tokens} stored value(s) read with the first key alone")
        if configured > 1:
            _echo("the other key(s) can be dropped from DSR_ENCRYPTION_KEY")
        raise typer.Exit(0)
    for count in results.values():
        for where, n in count.columns.items():
            print(f"{where}: {n} value(s) need another key or a new index")
    if old:
        _echo(f"{old} value(s) still under an older key: run `aina-dsr keys rotate`")
    if unreadable:
        _echo(
            f"{unreadable} value(s) cannot be read with the first key of DSR_ENCRYPTION_KEY: "
            "keep the key they were written with"
        )
    if stale:
        _echo(f"{stale} blind index(es) not made with the first key: run `aina-dsr keys rotate`")
    raise typer.Exit(1)
