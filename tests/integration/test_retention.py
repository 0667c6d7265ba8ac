"""Retention: a closed request keeps its evidence and, after the retention period, nothing more."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.scheduler import RETENTION_JOB, retention_job, scheduler_component
from workflows.persistence.tables import (
    Attachment,
    ConversationState,
    DataSubject,
    InboundMail,
    Message,
    OutboxItem,
    Request,
    Verification,
)
from workflows.privacy.audit import verify_chain
from workflows.privacy.retention import PURGE_ACTION, purge_closed
from workflows.privacy.vault import Vault
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100
BOB = 700200
PHONE = "+77011234567"
EMAIL = "aigerim.nurlanovna@mail.kz"
STAFF = Actor.staff(STAFF_ID, "Dana (privacy officer)")
DAYS = 1095


async def completed_complaint(service: RequestService, user_id: int = ALICE) -> str:
    """A complaint taken, answered and closed, with a file and a few messages."""
    view = await service.open_request(
        kind="complaint",
        channel="telegram",
        language="kk",
        telegram_user_id=user_id,
        fields={"text": "Маған спам келеді", "full_name": "Айгерим Нурлановна"},
        body="Маған спам келеді",
    )
    reference = view.reference
    await service.verify_by_contact(
        reference, sender_user_id=user_id, contact_user_id=user_id, phone=PHONE
    )
    await service.take(reference, STAFF)
    await service.ask_info(reference, STAFF, "Which e-mail address gets the newsletters?")
    await service.attach(
        reference,
        Actor.person_telegram(user_id),
        body=EMAIL,
        evidence=[Evidence("screen.png", "image/png", b"\x89PNG fake")],
    )
    await service.approve(reference, STAFF)
    await service.complete(reference, STAFF, answer="We have stopped the newsletters.")
    return reference


async def count(sessions: async_sessionmaker[AsyncSession], column: Any) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count(column))) or 0)


async def mark_outbox_sent(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        for row in await session.scalars(select(OutboxItem)):
            row.status = "sent"


async def test_nothing_is_purged_before_the_retention_period_passes(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    reference = await completed_complaint(service)
    await mark_outbox_sent(sessions)
    clock.advance(days=DAYS - 1)

    report = await purge_closed(sessions, vault, clock, retention_days=DAYS)

    assert report.requests == 0 and report.total == 0
    view = await service.get(reference)
    assert view.fields["text"] == "Маған спам келеді"
    assert [e.filename for e in await service.evidence(reference)] == ["screen.png"]
    assert await service.subject_contacts(reference) == {
        "phone": PHONE,
        "telegram_user_id": str(ALICE),
    }


async def test_a_closed_request_keeps_its_evidence_and_drops_the_rest_after_retention(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    reference = await completed_complaint(service)
    await mark_outbox_sent(sessions)
    before = await service.get(reference, with_events=True)
    clock.advance(days=DAYS + 1)

    report = await purge_closed(sessions, vault, clock, retention_days=DAYS)

    assert report.requests == 1
    assert report.fields == 1 and report.attachments == 1 and report.subjects == 1
    assert report.message_bodies >= 2 and report.verifications == 1 and report.outbox > 0
    # The register still shows the request and its whole story, plus the purge.
    after = await service.get(reference, with_events=True)
    assert (after.reference, after.kind, after.status) == (reference, "complaint", "completed")
    assert (after.received_at, after.closed_at, after.due_at) == (
        before.received_at,
        before.closed_at,
        before.due_at,
    )
    assert (after.verified_by, after.verified_at) == ("telegram_contact", before.verified_at)
    assert after.assignee_id == STAFF_ID
    assert after.events[:-1] == before.events
    purge = after.events[-1]
    assert (purge.action, purge.actor) == (PURGE_ACTION, "system")
    assert purge.details["field_names"] == ["full_name", "text"]
    assert purge.details["dropped"] == {
        "fields": 1,
        "message_bodies": report.message_bodies,
        "attachments": 1,
        "verifications": 1,
        "outbox": report.outbox,
        "subjects": 1,
    }
    assert "Айгерим" not in str(purge.details) and PHONE not in str(purge.details)
    assert (await verify_chain(sessions)).intact
    # What went is gone.
    assert after.fields == {}
    assert await service.evidence(reference) == []
    assert [body for _, _, body in await service.messages(reference)] == [None] * len(
        await service.messages(reference)
    )
    assert await service.subject_contacts(reference) == {"telegram_user_id": str(ALICE)}
    assert await count(sessions, Verification.id) == 0
    assert await count(sessions, OutboxItem.id) == 0
    assert await count(sessions, Message.id) == report.message_bodies


async def test_a_second_run_purges_nothing_and_writes_no_event(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    reference = await completed_complaint(service)
    clock.advance(days=DAYS + 1)
    await purge_closed(sessions, vault, clock, retention_days=DAYS)
    events = len((await service.get(reference, with_events=True)).events)

    clock.advance(days=1)
    again = await purge_closed(sessions, vault, clock, retention_days=DAYS)

    assert again.requests == 0 and again.total == 0
    assert len((await service.get(reference, with_events=True)).events) == events
    assert (await verify_chain(sessions)).intact


async def test_open_requests_are_untouched_however_old(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    view = await service.open_request(
        kind="access",
        channel="telegram",
        language="ru",
        telegram_user_id=BOB,
        fields={"full_name": "Болат"},
        body="Какие мои данные у вас?",
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=BOB, contact_user_id=BOB, phone=PHONE
    )
    await service.take(view.reference, STAFF)
    clock.advance(days=DAYS * 2)

    report = await purge_closed(sessions, vault, clock, retention_days=DAYS)

    assert report.requests == 0
    again = await service.get(view.reference, with_events=True)
    assert again.fields == {"full_name": "Болат"}
    assert PURGE_ACTION not in [e.action for e in again.events]
    assert await service.messages(view.reference) == [("in", "telegram", "Какие мои данные у вас?")]
    assert await service.subject_contacts(view.reference) == {
        "phone": PHONE,
        "telegram_user_id": str(BOB),
    }


async def test_the_person_keeps_their_contacts_while_another_request_is_open(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    old = await completed_complaint(service)
    clock.advance(days=DAYS)
    new = await service.open_request(
        kind="access", channel="telegram", language="kk", telegram_user_id=ALICE
    )
    clock.advance(days=2)

    report = await purge_closed(sessions, vault, clock, retention_days=DAYS)

    assert report.requests == 1 and report.subjects == 0
    assert (await service.get(old)).fields == {}
    assert await service.subject_contacts(new.reference) == {
        "phone": PHONE,
        "telegram_user_id": str(ALICE),
    }

    # Once that one is closed and its retention has passed too, the contacts go.
    await service.cancel(new.reference, Actor.person_telegram(ALICE))
    clock.advance(days=DAYS + 1)
    later = await purge_closed(sessions, vault, clock, retention_days=DAYS)
    # The new request's data, and the contacts (recorded once, on the first of the two).
    assert later.requests == 2 and later.fields == 1 and later.subjects == 1
    assert await service.subject_contacts(new.reference) == {"telegram_user_id": str(ALICE)}
    assert (await verify_chain(sessions)).intact


async def test_a_dry_run_counts_and_changes_nothing(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    reference = await completed_complaint(service)
    clock.advance(days=DAYS + 1)

    dry = await purge_closed(sessions, vault, clock, retention_days=DAYS, dry_run=True)

    assert dry.dry_run and dry.requests == 1 and dry.attachments == 1
    view = await service.get(reference, with_events=True)
    assert view.fields["text"] == "Маған спам келеді"
    assert PURGE_ACTION not in [e.action for e in view.events]
    real = await purge_closed(sessions, vault, clock, retention_days=DAYS)
    assert real.counts() == dry.counts()


async def test_many_requests_are_purged_in_small_batches(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    references = []
    for n in range(5):
        view = await service.open_request(
            kind="complaint",
            channel="telegram",
            language="en",
            telegram_user_id=ALICE + n,
            fields={"text": f"complaint {n}"},
            body=f"complaint {n}",
        )
        await service.cancel(view.reference, Actor.person_telegram(ALICE + n))
        references.append(view.reference)
    clock.advance(days=DAYS + 1)

    report = await purge_closed(sessions, vault, clock, retention_days=DAYS, batch=2)

    assert report.requests == 5 and report.fields == 5 and report.message_bodies == 5
    for reference in references:
        assert (await service.get(reference)).status == "cancelled"
        assert (await service.get(reference)).fields == {}
    assert (await verify_chain(sessions)).intact


async def test_abandoned_dialogs_loose_mail_and_people_without_requests_go_after_retention(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, clock: FrozenClock
) -> None:
    start = clock.now()
    async with sessions.begin() as session:
        session.add_all(
            [
                ConversationState(
                    key="old-chat",
                    state="Dialog:name",
                    data_enc=vault.encrypt_json({"name": "Айгерим"}),
                    updated_at=start,
                ),
                ConversationState(
                    key="recent-chat",
                    state="Dialog:name",
                    data_enc=vault.encrypt_json({"name": "Болат"}),
                    updated_at=start + timedelta(days=DAYS),
                ),
                InboundMail(
                    mail_key="k1",
                    folder="INBOX",
                    uidvalidity=1,
                    uid=1,
                    outcome="quarantined",
                    raw_enc=vault.encrypt_bytes(b"From: x@y.kz\r\n\r\nhello"),
                    sender_index=vault.blind_index("email", "x@y.kz"),
                    received_at=start,
                    processed_at=start,
                ),
                DataSubject(
                    telegram_user_id=BOB,
                    phone_enc=vault.encrypt(PHONE),
                    phone_index=vault.blind_index("phone", PHONE),
                    language="kk",
                    created_at=start,
                ),
            ]
        )
    clock.advance(days=DAYS + 1)

    report = await purge_closed(sessions, vault, clock, retention_days=DAYS)

    assert (report.conversation_states, report.inbound_mail, report.subjects) == (1, 1, 1)
    async with sessions() as session:
        assert list(await session.scalars(select(ConversationState.key))) == ["recent-chat"]
        mail = await session.scalar(select(InboundMail))
        assert mail is not None and mail.raw_enc is None and mail.sender_index is None
        assert mail.outcome == "quarantined"
        subject = await session.scalar(select(DataSubject))
        assert subject is not None and subject.phone_enc is None and subject.phone_index is None
    assert await count(sessions, Attachment.id) == 0
    assert await count(sessions, Request.id) == 0


async def test_the_scheduler_purges_once_a_day_while_it_leads(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    vault: Vault,
    clock: FrozenClock,
    calendar: WorkingCalendar,
) -> None:
    component = scheduler_component(
        service=service,
        sessions=sessions,
        engine=engine,
        vault=vault,
        clock=clock,
        calendar=calendar,
        retention_days=DAYS,
    )
    job = next(j for j in component.build_scheduler().get_jobs() if j.id == RETENTION_JOB)
    assert job.func is retention_job
    assert (job.misfire_grace_time, job.coalesce, job.max_instances) == (3600, True, 1)
    assert str(job.trigger) == "cron[hour='3', minute='30']"

    reference = await completed_complaint(service)
    clock.advance(days=DAYS + 1)
    stop = asyncio.Event()
    task = asyncio.create_task(component.run(stop))
    for _ in range(200):
        if component.leading:
            break
        await asyncio.sleep(0.01)
    await retention_job(component.id)
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    assert (await service.get(reference)).fields == {}
