"""``aina-dsr audit``: proof that the audit log is intact, and its head written down outside."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer

from aina_dsr.settings import SettingsError, load_settings
from aina_dsr.wiring import open_core
from workflows.privacy.audit import ChainReport, verify_chain
from workflows.privacy.audit_checkpoint import (
    Checkpoint,
    CheckpointError,
    append_checkpoint,
    read_checkpoints,
)

audit_app = typer.Typer(help="Check the audit log's hash chain.", no_args_is_help=True)

CHECKPOINT_SETTING = "DSR_AUDIT_CHECKPOINT_FILE"


def _checkpoints(path: Path | None) -> list[Checkpoint]:
    if path is None:
        return []
    try:
        return read_checkpoints(path)
    except CheckpointError as exc:
        raise SettingsError(CHECKPOINT_SETTING, f"{path}: {exc}") from None


async def _verify(write_checkpoint: bool) -> tuple[ChainReport, Path | None, int, bool]:
    settings = load_settings()
    path = settings.audit_checkpoint_file
    if write_checkpoint and path is None:
        raise SettingsError(CHECKPOINT_SETTING, "is not set: --checkpoint appends to that file")
    known = _checkpoints(path)
    async with open_core(settings) as core:
        report = await verify_chain(core.sessions, core.vault, checkpoints=known)
        at = core.clock.now()
    written = False
    if write_checkpoint and path is not None and report.intact:
        # Only a chain that holds is written down: a checkpoint vouches for what it records.
        checkpoint = Checkpoint(at.astimezone(UTC), report.events, report.head, report.head_id)
        try:
            append_checkpoint(path, checkpoint)
        except OSError as exc:
            raise SettingsError(CHECKPOINT_SETTING, f"cannot append to {path}: {exc}") from None
        written = True
    return report, path, len(known), written


@audit_app.command("verify")
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for other programs.")] = False,
    checkpoint: Annotated[
        bool,
        typer.Option(
            "--checkpoint",
            help="When the log holds, append its length and head to DSR_AUDIT_CHECKPOINT_FILE.",
        ),
    ] = False,
) -> None:
    """Walk the audit log in order, signatures and checkpoints too: exit 0 if every link
    holds, 1 naming the first broken event (or the checkpoint the log falls short of)."""
    report, path, known, written = asyncio.run(_verify(checkpoint))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "intact": report.intact,
                    "events": report.events,
                    "broken_at": report.broken_at,
                    "reference": report.reference,
                    "reason": report.reason,
                    "head": report.head,
                    "checkpoints": known,
                    "checkpoint_written": written,
                }
            )
        )
    elif report.intact:
        typer.echo(
            f"audit log intact: {report.events} event(s), every link and signature holds; "
            f"head {report.head}"
        )
        if path is not None:
            typer.echo(
                f"{known} checkpoint(s) in {path} hold" if known else f"no checkpoint yet in {path}"
            )
        if written:
            typer.echo(f"checkpoint appended to {path}")
    elif report.broken_at is None:
        typer.echo(f"audit log BROKEN: {report.reason}", err=True)
    else:
        typer.echo(
            f"audit log BROKEN at event {report.broken_at}"
            f" ({report.reference or 'no request'}): {report.reason}",
            err=True,
        )
    raise typer.Exit(0 if report.intact else 1)
