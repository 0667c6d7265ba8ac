"""The audit log is hash-chained: every writer's events link up, and tampering is found."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import STAFF_ID
from tests.test_cli_frame import aina_dsr
from workflows.audit import GENESIS, verify_chain
from workflows.service import RequestService
from workflows.tables import AuditEvent
from workflows.views import Actor

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

    broken = aina_dsr(tmp_path, "audit", "verify", "--json", **settings)
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
    exported = aina_dsr(tmp_path, "requests", "export", "--format", "json", **settings)
    assert exported.returncode == 0, exported.stderr
    (request,) = json.loads(exported.stdout)
    events = request["events"]
    assert events[0]["prev_hash"] == GENESIS
    assert all(len(e["hash"]) == 64 for e in events)
    assert [e["prev_hash"] for e in events[1:]] == [e["hash"] for e in events[:-1]]
