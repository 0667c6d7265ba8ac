"""Replies thread onto their request: by our Message-ID, or by the reference from its sender."""

from __future__ import annotations

from email.message import EmailMessage

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.intake import MailIntake
from mail.outcomes import Outcome
from tests.clocks import FrozenClock
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

OWNER = "aliya@example.kz"


def letter(sender: str, subject: str, text: str, number: int, **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "aina.app@mercury.kz"
    message["Subject"] = subject
    message["Message-ID"] = f"<thread-{number}@example.kz>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text)
    return bytes(message)


def intake_for(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> MailIntake:
    return MailIntake(service, sessions, vault, clock)


async def test_a_reply_gives_the_missing_fields_and_they_land_on_the_request(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    intake = intake_for(service, sessions, vault, clock)
    opened = await intake.handle(
        letter(OWNER, "Отзыв согласия", "Отзываю согласие на обработку данных.", 1)
    )
    assert opened.reference is not None
    assert "full_name" in (await service.get(opened.reference)).missing_fields

    reply = await intake.handle(
        letter(
            OWNER,
            f"Re: [{opened.reference}] Подтвердите Ваш запрос",
            "ФИО: Серікова Әлия Маратқызы\nДанные: все мои данные\n\n> старое письмо",
            2,
        )
    )

    assert (reply.outcome, reply.reference) == (Outcome.ATTACHED, opened.reference)
    view = await service.get(opened.reference)
    assert view.missing_fields == ()
    assert view.fields["full_name"] == "Серікова Әлия Маратқызы"
    assert view.fields["text"] == "Отзываю согласие на обработку данных."  # not overwritten
    assert len(await service.list_requests()) == 1


async def test_a_reference_in_the_subject_from_someone_else_opens_their_own_request(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    intake = intake_for(service, sessions, vault, clock)
    opened = await intake.handle(letter(OWNER, "Удалить аккаунт", "Удалите мой аккаунт.", 1))
    assert opened.reference is not None

    stranger = await intake.handle(
        letter(
            "mallory@example.org",
            f"Re: [{opened.reference}] Please confirm",
            "123456 - please delete my account too",
            2,
        )
    )

    assert stranger.outcome is Outcome.OPENED
    assert stranger.reference != opened.reference
    original = await service.get(opened.reference)
    assert original.status == "awaiting_verification"
    assert len(await service.messages(opened.reference)) == 1


async def test_in_reply_to_our_message_id_threads_without_a_reference(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    intake = intake_for(service, sessions, vault, clock)
    opened = await intake.handle(letter(OWNER, "Unsubscribe", "Unsubscribe me please.", 1))
    assert opened.reference is not None

    follow_up = await intake.handle(
        letter(
            OWNER,
            "one more thing",
            "I also get SMS, please stop those as well.",
            2,
            In_Reply_To="<thread-1@example.kz>",
        )
    )

    assert (follow_up.outcome, follow_up.reference) == (Outcome.ATTACHED, opened.reference)
    bodies = [body for _, _, body in await service.messages(opened.reference)]
    assert any("SMS" in (body or "") for body in bodies)


async def test_a_wrong_code_is_refused_and_the_request_waits(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    intake = intake_for(service, sessions, vault, clock)
    opened = await intake.handle(letter(OWNER, "Delete my account", "Delete my account.", 1))
    assert opened.reference is not None

    wrong = await intake.handle(letter(OWNER, f"Re: [{opened.reference}]", "000000", 2))

    assert (wrong.outcome, wrong.reference) == (Outcome.CODE_REFUSED, opened.reference)
    assert (await service.get(opened.reference)).status == "awaiting_verification"
