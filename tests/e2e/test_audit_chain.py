"""The audit log is hash-chained: every writer's events link up, and tampering is found."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import sqlalchemy as sa
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.audit_tampering import plain_hash, rewrite_and_rehash
from tests.cli_command import aina_dsr, aina_dsr_here
from tests.conftest import STAFF_ID
from workflows.persistence.engines import make_engine, make_sessionmaker, upgrade_engine
from workflows.persistence.tables import AuditEvent
from workflows.privacy.audit import GENESIS, verify_chain
from workflows.privacy.audit_batch import record_events
from workflows.privacy.audit_checkpoint import read_checkpoints
from workflows.privacy.vault import Vault
from workflows.requests.intake import EmailOpening
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

STAFF = Actor.staff(STAFF_ID, "Dana")


async def a_life(service: RequestService, user: int) -> str:
    view = await service.open_request(
        kind="complaint",
        channel="telegram",
        language="ru",
        telegram_user_id=user,
        fields={"text": "почему реклама?"},
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=user, contact_user_id=user, phone="+77011234567"
    )
    await service.take(view.reference, STAFF)
    await service.reject(view.reference, STAFF, "не персональные данные")
    return view.reference


async def test_every_event_links_to_the_one_before(
    service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await a_life(service, 1001)
    async with sessions() as session:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    assert len(rows) >= 4
    assert rows[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    report = await verify_chain(sessions)
    assert report.intact
    assert report.events == len(rows)


async def test_concurrent_writers_never_fork_the_chain(
    service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await asyncio.gather(*(a_life(service, 2000 + n) for n in range(8)))
    report = await verify_chain(sessions, batch=7)
    assert report.intact, report


def _event(reference: str, action: str) -> AuditEvent:
    return AuditEvent(
        request_id=None,
        reference=reference,
        at=datetime(2026, 11, 25, 9, tzinfo=UTC),
        actor="system",
        channel="cli",
        action=action,
        details={},
    )


async def test_events_rolled_back_with_a_savepoint_leave_the_chain_whole(
    service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reference = await a_life(service, 3001)
    async with sessions.begin() as session:
        session.add(_event(reference, "first"))
        await session.flush()
        savepoint = await session.begin_nested()
        session.add(_event(reference, "undone"))
        await session.flush()
        await savepoint.rollback()
        session.add(_event(reference, "after"))
        session.add(_event(reference, "last"))
    async with sessions() as session:
        actions = list(await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions[-3:] == ["first", "after", "last"]
    report = await verify_chain(sessions)
    assert report.intact, report


async def test_a_batch_of_letters_chains_its_events_in_order_after_the_transactions_own(
    service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reference = await a_life(service, 3101)
    letters = [
        EmailOpening(
            kind=kind,
            language="en",
            fields={},
            email=f"person{n}@mail.kz",
            body="please",
            external_id=f"<batch-{n}@mail.kz>",
        )
        for n, kind in enumerate(["access", "rectify", "unsubscribe", "complaint"])
    ]
    opened = await service.open_by_email(letters)
    async with sessions.begin() as session:
        session.add(_event(reference, "alone, not yet flushed"))
        batch = await record_events(
            session, [_values(reference, "batch 1"), _values(reference, "batch 2")]
        )
    async with sessions() as session:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    opening = [row for row in rows if row.action == "opened"][-len(letters) :]
    assert [row.reference for row in opening] == [view.reference for view in opened]
    actions = [row.action for row in rows[-3:]]
    assert actions == ["alone, not yet flushed", "batch 1", "batch 2"]
    assert [row.id for row in rows[-2:]] == [event.id for event in batch]
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    report = await verify_chain(sessions)
    assert report.intact, report
    assert report.events == len(rows)


def _values(reference: str, action: str) -> dict[str, object]:
    return {
        "request_id": None,
        "reference": reference,
        "at": datetime(2026, 11, 25, 9, tzinfo=UTC),
        "actor": "system",
        "channel": "cli",
        "action": action,
    }


async def test_a_changed_event_is_named_by_audit_verify(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
) -> None:
    reference = await a_life(service, 3001)
    settings = {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": encryption_key}
    intact = aina_dsr(tmp_path, "audit", "verify", **settings)
    assert intact.returncode == 0, intact.stderr
    assert "intact" in intact.stdout

    # Someone edits the rejection's actor in the database, by hand.
    async with sessions.begin() as session:
        victim = await session.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "reject", AuditEvent.reference == reference
            )
        )
        assert victim is not None
        await session.execute(
            update(AuditEvent).where(AuditEvent.id == victim.id).values(actor_name="Somebody else")
        )
        victim_id = victim.id

    broken = aina_dsr_here(tmp_path, "audit", "verify", "--json", **settings)
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["intact"] is False
    assert report["broken_at"] == victim_id
    assert report["reference"] == reference
    assert "changed" in report["reason"]


async def test_a_deleted_event_breaks_the_link(
    service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await a_life(service, 4001)
    async with sessions.begin() as session:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
        await session.delete(rows[1])
    report = await verify_chain(sessions)
    assert not report.intact
    assert report.broken_at == rows[2].id
    assert "follow" in (report.reason or "")


async def test_the_register_export_carries_the_chain(
    service: RequestService, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    await a_life(service, 5001)
    settings = {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": encryption_key}
    exported = aina_dsr_here(tmp_path, "requests", "export", "--format", "json", **settings)
    assert exported.returncode == 0, exported.stderr
    (request,) = json.loads(exported.stdout)
    events = request["events"]
    assert events[0]["prev_hash"] == GENESIS
    assert all(len(e["hash"]) == 64 for e in events)
    assert [e["prev_hash"] for e in events[1:]] == [e["hash"] for e in events[:-1]]


async def test_rewriting_an_event_and_hashing_the_rest_again_is_caught(
    service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reference = await a_life(service, 6001)
    await a_life(service, 6002)
    async with sessions() as session:
        victim = await session.scalar(
            select(AuditEvent.id).where(
                AuditEvent.action == "reject", AuditEvent.reference == reference
            )
        )
    assert victim is not None

    # Whoever can write to the database knows the link formula, but not the key.
    await rewrite_and_rehash(sessions, victim, actor_name="Somebody else")

    report = await verify_chain(sessions)
    assert not report.intact
    assert report.broken_at == victim
    assert report.reference == reference
    assert "key" in (report.reason or "")


async def test_deleting_the_last_events_is_caught_against_the_checkpoint(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
) -> None:
    await a_life(service, 7001)
    checkpoints = tmp_path / "audit-checkpoints.jsonl"
    settings = {
        "DSR_DATABASE_URL": database_url,
        "DSR_ENCRYPTION_KEY": encryption_key,
        "DSR_AUDIT_CHECKPOINT_FILE": str(checkpoints),
    }
    anchored = aina_dsr_here(tmp_path, "audit", "verify", "--checkpoint", **settings)
    assert anchored.returncode == 0, anchored.stderr
    async with sessions() as session:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    [line] = checkpoints.read_text().splitlines()
    checkpoint = json.loads(line)
    assert (checkpoint["events"], checkpoint["head"]) == (len(rows), rows[-1].hash)
    # More events after the checkpoint: the chain still holds it.
    await a_life(service, 7002)
    clean = await verify_chain(sessions, checkpoints=read_checkpoints(checkpoints))
    assert clean.intact, clean

    # Someone deletes the newest events, back to before the checkpoint: every link that
    # is left holds, but the checkpoint outside the database counted more.
    async with sessions.begin() as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.id >= rows[-2].id))
    cut = aina_dsr_here(tmp_path, "audit", "verify", "--json", **settings)
    assert cut.returncode == 1
    report = json.loads(cut.stdout)
    assert report["intact"] is False
    assert report["events"] == len(rows) - 2
    assert f"{len(rows)} event(s)" in report["reason"]
    # A new checkpoint is refused while the chain does not hold the old ones.
    again = aina_dsr_here(tmp_path, "audit", "verify", "--checkpoint", **settings)
    assert again.returncode == 1
    assert len(checkpoints.read_text().splitlines()) == 1

    # And cut, then grown back past the checkpoint: the event at its place is another.
    await a_life(service, 7003)
    grown = aina_dsr_here(tmp_path, "audit", "verify", "--json", **settings)
    assert grown.returncode == 1
    report = json.loads(grown.stdout)
    assert report["events"] == len(rows)  # the walk stops at the checkpoint's place
    assert report["broken_at"] is not None
    assert "checkpoint" in report["reason"]


async def test_a_rewritten_chain_is_caught_by_audit_verify_without_a_checkpoint(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
) -> None:
    reference = await a_life(service, 8001)
    async with sessions() as session:
        first = await session.scalar(
            select(AuditEvent.id).where(AuditEvent.reference == reference).order_by(AuditEvent.id)
        )
    assert first is not None
    await rewrite_and_rehash(sessions, first, details={"note": "nothing happened"})
    settings = {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": encryption_key}
    broken = aina_dsr_here(tmp_path, "audit", "verify", "--json", **settings)
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["broken_at"] == first


# The last revision whose chain was linked without a key.
UNKEYED = "0008"


async def an_unkeyed_chain(
    database_url: str, actions: list[str], *, edit: int | None = None
) -> None:
    """A database as the older version left it: events linked with SHA-256 alone; with
    ``edit``, that event's actor changed by hand afterwards (its link left as it was)."""
    engine = make_engine(database_url)
    try:
        await upgrade_engine(engine, UNKEYED)
        table = sa.table(
            "audit_event",
            *(sa.column(name) for name in ("request_id", "reference", "actor", "actor_id")),
            *(sa.column(name) for name in ("actor_name", "channel", "action", "from_status")),
            *(sa.column(name) for name in ("to_status", "prev_hash", "hash")),
            sa.column("at", sa.DateTime(timezone=True)),
            sa.column("details", sa.JSON()),
        )
        prev = GENESIS
        async with engine.begin() as connection:
            for n, action in enumerate(actions):
                row = SimpleNamespace(
                    request_id=1,
                    reference="DSR-2026-000001",
                    at=datetime(2026, 11, 20, 9, n, tzinfo=UTC),
                    actor="system",
                    actor_id=None,
                    actor_name=None,
                    channel="cli",
                    action=action,
                    from_status=None,
                    to_status=None,
                    details={"n": n},
                )
                digest = plain_hash(prev, row)  # type: ignore[arg-type]
                if n == edit:
                    row.actor = "staff"
                await connection.execute(
                    table.insert().values(**vars(row), prev_hash=prev, hash=digest)
                )
                prev = digest
        await upgrade_engine(engine)
    finally:
        await engine.dispose()


async def test_an_unkeyed_chain_from_an_older_version_is_signed_once_and_then_holds(
    database_url: str, encryption_key: str, vault: Vault, tmp_path: Path
) -> None:
    await an_unkeyed_chain(database_url, ["opened", "verified", "taken"])
    settings = {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": encryption_key}

    # The first command after the upgrade signs the old events with the key.
    verified = aina_dsr_here(tmp_path, "audit", "verify", "--json", **settings)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["events"] == 3

    engine = make_engine(database_url)
    try:
        sessions = make_sessionmaker(engine, vault)
        async with sessions() as session:
            first = await session.scalar(select(AuditEvent.id).order_by(AuditEvent.id))
        assert first is not None
        await rewrite_and_rehash(sessions, first, actor="staff")
    finally:
        await engine.dispose()
    broken = aina_dsr_here(tmp_path, "audit", "verify", "--json", **settings)
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["broken_at"] == first


async def test_an_unkeyed_chain_already_broken_is_not_signed_past_the_break(
    database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    await an_unkeyed_chain(database_url, ["opened", "verified", "taken", "rejected"], edit=1)
    settings = {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": encryption_key}

    for _ in range(2):  # signing the old chain never blesses what was changed before it
        broken = aina_dsr_here(tmp_path, "audit", "verify", "--json", **settings)
        assert broken.returncode == 1
        report = json.loads(broken.stdout)
        assert report["events"] == 2
        assert "changed" in report["reason"]
