"""The request service: a request's life, identity proofs, references under load."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from workflows.errors import IdentityRefused, IllegalTransition, NotAllowed, RequestNotFound
from workflows.identity import CodeOutcome
from workflows.persistence.tables import AuditEvent, Customer, OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.intake import SharedContact
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.requests.verification import verification_cutoff
from workflows.snapshots import Actor

ALICE = 700100
PHONE = "+77011234567"
EMAIL = "aigerim.nurlanovna@mail.kz"
STAFF = Actor.staff(STAFF_ID, "Dana (privacy officer)")


async def outbox(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> list[dict[str, object]]:
    """Everything queued for delivery, oldest first, decrypted."""
    async with sessions() as session:
        rows = (await session.scalars(select(OutboxItem).order_by(OutboxItem.id))).all()
        return [
            {
                "template": r.template,
                "audience": r.audience,
                "channel": r.channel,
                "address": vault.decrypt(r.address_enc),
                "language": r.language,
                "params": vault.decrypt_json(r.params_enc),
            }
            for r in rows
        ]


async def open_telegram(service: RequestService, kind: str = "access", **kw: object) -> str:
    view = await service.open_request(
        kind=kind,
        channel="telegram",
        language="kk",
        telegram_user_id=ALICE,
        **kw,  # type: ignore[arg-type]
    )
    return view.reference


async def test_a_telegram_access_request_is_acknowledged_with_its_statutory_deadline(
    service: RequestService, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    view = await service.open_request(
        kind="access",
        channel="telegram",
        language="kk",
        telegram_user_id=ALICE,
        body="Менің деректерім",
    )

    assert view.reference == "DSR-2026-000001"
    assert view.status == "awaiting_verification"
    # Received Tuesday 24 November: three working days, not the policy's thirty calendar days.
    assert service.calendar.local_date(view.due_at) == date(2026, 11, 27)  # type: ignore[arg-type]
    sent = await outbox(sessions, vault)
    assert [(m["template"], m["audience"], m["address"], m["language"]) for m in sent] == [
        ("request_received", "subject", str(ALICE), "kk")
    ]
    assert sent[0]["params"]["due_date"] == "2026-11-27"  # type: ignore[index]
    assert await service.messages(view.reference) == [("in", "telegram", "Менің деректерім")]


async def test_own_contact_verifies_and_puts_a_card_before_staff(
    service: RequestService, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    reference = await open_telegram(service)

    view = await service.verify_by_contact(
        reference, sender_user_id=ALICE, contact_user_id=ALICE, phone="77011234567"
    )

    assert view.status == "verified"
    assert view.verified_by == "telegram_contact"
    assert view.customer_matched is False
    templates = [(m["template"], m["audience"]) for m in await outbox(sessions, vault)]
    assert ("request_verified", "subject") in templates
    assert ("staff_card", "staff_group") in templates


async def test_a_contacts_number_without_its_plus_is_read_as_international(
    service: RequestService,
) -> None:
    # Telegram's "84912345678" is Vietnam's +84, not a Kazakh number after a trunk prefix 8.
    reference = await open_telegram(service)

    await service.verify_by_contact(
        reference, sender_user_id=ALICE, contact_user_id=ALICE, phone="84912345678"
    )

    assert (await service.subject_contacts(reference))["phone"] == "+84912345678"


async def test_someone_elses_contact_is_refused_and_recorded(
    service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reference = await open_telegram(service)

    with pytest.raises(IdentityRefused):
        await service.verify_by_contact(
            reference, sender_user_id=ALICE, contact_user_id=999, phone=PHONE
        )
    with pytest.raises(IdentityRefused):
        # A typed number comes without a user id at all.
        await service.verify_by_contact(
            reference, sender_user_id=ALICE, contact_user_id=None, phone=PHONE
        )

    view = await service.get(reference, with_events=True)
    assert view.status == "awaiting_verification"
    assert [e.action for e in view.events].count("contact_refused") == 2


async def test_a_request_filed_with_the_senders_own_contact_is_verified_in_one_go(
    service: RequestService, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    view = await service.open_request(
        kind="access",
        channel="telegram",
        language="kk",
        telegram_user_id=ALICE,
        contact=SharedContact(user_id=ALICE, phone="77011234567"),
    )

    assert view.status == "verified"
    assert view.verified_by == "telegram_contact"
    # One message to the person (registered and verified, with the deadline), not two.
    sent = [(m["template"], m["audience"]) for m in await outbox(sessions, vault)]
    assert sent == [("request_verified", "subject"), ("staff_card", "staff_group")]
    events = (await service.get(view.reference, with_events=True)).events
    assert [e.action for e in events] == ["opened", "verify"]


async def test_a_request_filed_with_someone_elses_contact_stays_unverified(
    service: RequestService, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    view = await service.open_request(
        kind="access",
        channel="telegram",
        language="kk",
        telegram_user_id=ALICE,
        contact=SharedContact(user_id=999, phone=PHONE),
    )

    assert view.status == "awaiting_verification"
    sent = [(m["template"], m["audience"]) for m in await outbox(sessions, vault)]
    assert sent == [("request_received", "subject")]
    events = (await service.get(view.reference, with_events=True)).events
    assert [e.action for e in events] == ["opened", "contact_refused"]


async def test_another_telegram_user_cannot_verify_or_cancel_a_request(
    service: RequestService,
) -> None:
    reference = await open_telegram(service)
    with pytest.raises(NotAllowed):
        await service.verify_by_contact(
            reference, sender_user_id=42, contact_user_id=42, phone=PHONE
        )
    with pytest.raises(NotAllowed):
        await service.cancel(reference, Actor.person_telegram(42))
    assert (await service.get(reference)).status == "awaiting_verification"


async def test_a_known_customer_is_matched_by_the_verified_phone(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    async with sessions.begin() as session:
        session.add(
            Customer(
                external_id="C-1",
                phone_enc=vault.encrypt(PHONE),
                phone_index=vault.blind_index("phone", PHONE),
                marketing_consent=True,
                source_digest="x",
                imported_at=clock.now(),
                updated_at=clock.now(),
            )
        )
    reference = await open_telegram(service)
    view = await service.verify_by_contact(
        reference, sender_user_id=ALICE, contact_user_id=ALICE, phone="+7 (701) 123-45-67"
    )
    assert view.customer_matched is True


async def test_the_email_code_verifies_after_a_wrong_try(
    service: RequestService, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    reference = await open_telegram(service)
    person = Actor.person_telegram(ALICE)

    await service.send_email_code(reference, person, "Aigerim.Nurlanovna@MAIL.kz")

    mail = [m for m in await outbox(sessions, vault) if m["template"] == "verification_code"]
    assert len(mail) == 1
    assert mail[0]["channel"] == "email"
    assert mail[0]["address"] == EMAIL
    code = mail[0]["params"]["code"]  # type: ignore[index]
    assert isinstance(code, str) and len(code) == 6 and code.isdigit()

    wrong = "000000" if code != "000000" else "111111"
    first = await service.verify_by_code(reference, wrong, person)
    assert (first.outcome, first.tries_left) == (CodeOutcome.WRONG, 4)
    assert first.request.status == "awaiting_verification"

    second = await service.verify_by_code(reference, f" {code[:3]} {code[3:]} ", person)
    assert second.outcome is CodeOutcome.OK
    assert second.request.status == "verified"
    assert second.request.verified_by == "email_code"


async def test_five_wrong_codes_kill_the_code(service: RequestService, sessions, vault) -> None:  # type: ignore[no-untyped-def]
    reference = await open_telegram(service)
    person = Actor.person_telegram(ALICE)
    await service.send_email_code(reference, person, EMAIL)
    code = next(m for m in await outbox(sessions, vault) if m["template"] == "verification_code")[
        "params"
    ]["code"]
    wrong = "000000" if code != "000000" else "111111"
    outcomes = [(await service.verify_by_code(reference, wrong, person)).outcome for _ in range(5)]
    assert outcomes == [CodeOutcome.WRONG] * 4 + [CodeOutcome.DEAD]
    right = await service.verify_by_code(reference, code, person)
    assert right.outcome is CodeOutcome.DEAD
    assert right.request.status == "awaiting_verification"


async def test_a_code_expires_after_fifteen_minutes(
    service: RequestService,
    sessions,
    vault,
    clock: FrozenClock,  # type: ignore[no-untyped-def]
) -> None:
    reference = await open_telegram(service)
    person = Actor.person_telegram(ALICE)
    await service.send_email_code(reference, person, EMAIL)
    code = next(m for m in await outbox(sessions, vault) if m["template"] == "verification_code")[
        "params"
    ]["code"]
    clock.advance(minutes=15)
    assert (await service.verify_by_code(reference, code, person)).outcome is CodeOutcome.EXPIRED


async def test_an_email_request_carries_its_code_in_the_acknowledgement(
    service: RequestService,
    sessions,
    vault,  # type: ignore[no-untyped-def]
) -> None:
    view = await service.open_request(
        kind="withdraw_consent",
        channel="email",
        language="ru",
        email=EMAIL,
        fields={"full_name": "Айгерим Нурлановна", "data_concerned": "все"},
        body="Прошу отозвать согласие",
        external_id="<abc@mail.kz>",
        send_code_to_email=True,
    )
    assert view.missing_fields == ("phone|email|postal_address",)
    [ack] = await outbox(sessions, vault)
    assert ack["template"] == "request_received_code"
    assert ack["address"] == EMAIL and ack["language"] == "ru"
    code = ack["params"]["code"]  # type: ignore[index]

    check = await service.verify_by_code(view.reference, code, Actor.person_email(EMAIL))
    assert check.request.status == "verified"


async def test_the_whole_life_of_a_request_is_in_the_audit_log(service: RequestService) -> None:
    reference = await open_telegram(service, kind="complaint", fields={"text": "<b>spam</b>"})
    await service.verify_by_contact(
        reference, sender_user_id=ALICE, contact_user_id=ALICE, phone=PHONE
    )
    await service.take(reference, STAFF)
    await service.ask_info(reference, STAFF, "Which e-mail address gets the newsletters?")
    await service.attach(
        reference,
        Actor.person_telegram(ALICE),
        body="aigerim@mail.kz",
        evidence=[Evidence("screen.png", "image/png", b"\x89PNG fake")],
    )
    await service.approve(reference, STAFF)
    done = await service.complete(reference, STAFF, answer="We have stopped the newsletters.")

    assert done.status == "completed" and done.closed_at is not None
    view = await service.get(reference, with_events=True)
    assert [(e.action, e.to_status) for e in view.events] == [
        ("opened", "awaiting_verification"),
        ("verify", "verified"),
        ("take", "in_review"),
        ("ask_info", "awaiting_info"),
        ("info_received", "in_review"),
        ("approve", "approved"),
        ("complete", "completed"),
    ]
    staff_events = [e for e in view.events if e.actor == "staff"]
    assert {(e.actor_id, e.actor_name) for e in staff_events} == {
        (str(STAFF_ID), "Dana (privacy officer)")
    }
    assert [e.filename for e in await service.evidence(reference)] == ["screen.png"]


async def test_someone_off_the_staff_list_cannot_act(service: RequestService) -> None:
    reference = await open_telegram(service)
    await service.verify_by_contact(
        reference, sender_user_id=ALICE, contact_user_id=ALICE, phone=PHONE
    )
    with pytest.raises(NotAllowed):
        await service.take(reference, Actor.staff(666, "Mallory"))
    with pytest.raises(NotAllowed):
        await service.approve(reference, Actor.person_telegram(ALICE))
    assert (await service.get(reference)).status == "verified"


async def test_a_refused_change_leaves_no_trace(
    service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reference = await open_telegram(service)
    async with sessions() as session:
        before = (
            await session.scalar(select(func.count(AuditEvent.id))),
            await session.scalar(select(func.count(OutboxItem.id))),
        )
    with pytest.raises(IllegalTransition):
        await service.approve(reference, STAFF)
    async with sessions() as session:
        after = (
            await session.scalar(select(func.count(AuditEvent.id))),
            await session.scalar(select(func.count(OutboxItem.id))),
        )
    assert after == before


async def test_unknown_reference(service: RequestService) -> None:
    with pytest.raises(RequestNotFound):
        await service.get("DSR-2026-999999")


async def test_unverified_requests_expire_with_a_notice(
    service: RequestService,
    sessions,
    vault,
    clock: FrozenClock,  # type: ignore[no-untyped-def]
) -> None:
    reference = await open_telegram(service)
    clock.advance(days=15)
    stale = await service.unverified_before(verification_cutoff(clock.now(), 14))
    assert stale == [reference]
    view = await service.expire(reference)
    assert view.status == "expired"
    assert (await outbox(sessions, vault))[-1]["template"] == "request_expired"


async def test_references_stay_unique_when_many_requests_arrive_at_once(
    service: RequestService,
) -> None:
    async def one(i: int) -> str:
        view = await service.open_request(
            kind="complaint", channel="telegram", language="en", telegram_user_id=10_000 + i
        )
        return view.reference

    references = await asyncio.gather(*(one(i) for i in range(40)))

    assert len(set(references)) == 40
    assert sorted(references) == [f"DSR-2026-{n:06d}" for n in range(1, 41)]


async def test_references_follow_the_local_year(
    service: RequestService, clock: FrozenClock
) -> None:
    await open_telegram(service)
    # 31 December 2026, 20:00 UTC is already 1 January 2027 in Almaty.
    clock.set(datetime(2026, 12, 31, 20, 0, tzinfo=UTC))
    view = await service.open_request(
        kind="complaint", channel="telegram", language="en", telegram_user_id=2
    )
    assert view.reference == "DSR-2027-000001"


async def test_a_summary_filed_already_is_not_filed_again_when_confirmed_once_more(
    service: RequestService, sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    # The bot files with ``once``: a press again after a failure half-way finds the
    # request in the filing's own transaction, filed and verified once.
    async def confirm() -> str:
        view = await service.open_request(
            kind="access",
            channel="telegram",
            language="en",
            telegram_user_id=ALICE,
            external_id="tg:700100:42",
            contact=SharedContact(user_id=ALICE, phone="+77011234567"),
            once=True,
        )
        assert view.verified_by == "telegram_contact"
        return view.reference

    first = await confirm()
    outbox_before = await outbox(sessions, vault)
    assert await confirm() == first

    assert [v.reference for v in await service.list_requests(telegram_user_id=ALICE)] == [first]
    assert await outbox(sessions, vault) == outbox_before
    async with sessions() as session:
        events = await session.scalar(select(func.count(AuditEvent.id)))
    assert events == 2  # opened, verified: nothing more
    other = await service.open_request(
        kind="access", channel="telegram", language="en", telegram_user_id=ALICE, once=True
    )
    assert other.reference != first  # without a message id: a request of its own
