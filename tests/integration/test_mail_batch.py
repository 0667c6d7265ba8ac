"""Letters taken in batches: the same outcomes as one by one, each stored and answered once."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.intake import MailIntake
from mail.outcomes import Outcome
from tests.clocks import FrozenClock
from tests.mail_corpus import CAP, EXPECTED, letter
from workflows.outbox.queue import Audience
from workflows.persistence.tables import InboundMail, OutboxItem
from workflows.privacy.audit import verify_chain
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

# A file whose storing fails, for a letter that cannot be stored with the others.
POISON = b"%PDF-1.4 poison"


def request_letter(
    number: int,
    *,
    attachment: str | None = None,
    payload: bytes = b"%PDF-1.4 scan",
    sender: int | None = None,
    **headers: str,
) -> bytes:
    message = EmailMessage()
    who = number if sender is None else sender
    message["From"] = f"Client {who} <client{who}@example.kz>"
    message["To"] = "aina.app@mercury.kz"
    message["Subject"] = "Удаление аккаунта"
    message["Message-ID"] = f"<batch-{number}@example.kz>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Прошу удалить мой аккаунт.")
    if attachment is not None:
        message.add_attachment(payload, "application", "pdf", filename=attachment)
    return bytes(message)


async def outbox(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxItem]:
    async with sessions() as session:
        return list(await session.scalars(select(OutboxItem).order_by(OutboxItem.id)))


async def test_the_corpus_in_one_batch_comes_out_as_letter_by_letter(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    intake = MailIntake(service, sessions, vault, clock, max_attachment_bytes=CAP)
    names = sorted(EXPECTED)

    results = await intake.handle_batch(
        [(uid, letter(name)) for uid, name in enumerate(names, start=1)]
    )

    assert [r.outcome.value for r in results] == [EXPECTED[n]["outcome"] for n in names]
    opened = [r for r in results if r.outcome is Outcome.OPENED]
    assert [r.reference for r in opened] == [f"DSR-2026-{n:06d}" for n in range(1, len(opened) + 1)]
    for name, result in zip(names, results, strict=True):
        if result.reference is None:
            continue
        view = await service.get(result.reference)
        assert (view.kind, view.language) == (EXPECTED[name]["kind"], EXPECTED[name]["language"])
        assert len(await service.evidence(result.reference)) == EXPECTED[name].get("evidence", 0)
    items = await outbox(sessions)
    acknowledgements = [i for i in items if i.template == "request_received_code"]
    assert len(acknowledgements) == len(opened)
    assert sum(i.template == "attachment_refused" for i in items) == 1
    assert sum(i.template == "staff_mail_quarantined" for i in items) == 2
    assert (await verify_chain(sessions)).intact

    again = await intake.handle_batch(
        [(uid, letter(name)) for uid, name in enumerate(names, start=1)]
    )
    assert {r.outcome for r in again} == {Outcome.DUPLICATE}
    assert len(await outbox(sessions)) == len(items)


async def test_a_poisoned_letter_is_quarantined_alone_and_the_others_answered_once(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storing = vault.encrypt_bytes

    def encrypt_bytes(value: bytes) -> bytes:
        if value == POISON:
            raise ValueError("this file breaks the database")
        return storing(value)

    monkeypatch.setattr(vault, "encrypt_bytes", encrypt_bytes)
    intake = MailIntake(service, sessions, vault, clock)
    letters = [
        (n, request_letter(n, attachment="poison.pdf" if n == 3 else None, payload=POISON))
        for n in (1, 2, 3, 4)
    ]

    results = await intake.handle_batch(letters)

    assert [r.outcome for r in results] == [
        Outcome.OPENED,
        Outcome.OPENED,
        Outcome.QUARANTINED,
        Outcome.OPENED,
    ]
    assert len(await service.list_requests()) == 3
    items = await outbox(sessions)
    acknowledgements = [i for i in items if i.audience == Audience.SUBJECT.value]
    assert len(acknowledgements) == 3
    assert [i.template for i in items if i.audience == Audience.STAFF_GROUP.value] == [
        "staff_mail_quarantined"
    ]
    async with sessions() as session:
        rows = list(await session.scalars(select(InboundMail).order_by(InboundMail.uid)))
    assert [row.outcome for row in rows] == ["opened", "opened", "quarantined", "opened"]
    assert rows[2].raw_enc is not None and vault.decrypt_bytes(rows[2].raw_enc) == letters[2][1]

    again = await intake.handle_batch(letters)

    assert {r.outcome for r in again} == {Outcome.DUPLICATE}
    assert len(await outbox(sessions)) == len(items)


async def test_a_reply_to_a_letter_earlier_in_the_same_batch_lands_on_its_request(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    intake = MailIntake(service, sessions, vault, clock)
    first = request_letter(1)
    follow_up = request_letter(2, sender=1, In_Reply_To="<batch-1@example.kz>")

    opened, reply, other = await intake.handle_batch(
        [(1, first), (2, follow_up), (3, request_letter(3))]
    )

    assert opened.outcome is Outcome.OPENED
    assert (reply.outcome, reply.reference) == (Outcome.ATTACHED, opened.reference)
    assert other.outcome is Outcome.OPENED
    assert len(await service.list_requests()) == 2
    async with sessions() as session:
        assert await session.scalar(select(func.count(InboundMail.id))) == 3
