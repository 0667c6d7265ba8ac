"""A person's way through the bot's dialog, step by step, for the tests that drive it.

Alice (``ALICE_ID``) starts a kind, answers its questions with ``ANSWERS``,
shares her own contact (``PHONE``) and confirms; ``code_in_outbox`` reads the
confirmation code the desk e-mailed; ``told`` waits for a ``notice`` to reach her.
"""

from __future__ import annotations

import html
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.callbacks import KindChoice, SummaryChoice
from tests.botapi import Call, Person
from tests.telegram_desk import Desk, buttons, message_id, words
from workflows.i18n import DeskInfo, kind_name, render_notification
from workflows.kinds import DEFAULT_KINDS, RequestKind
from workflows.outbox.queue import Channel
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

ALICE_ID = 700100

PHONE = "+77011234567"

ANSWERS: dict[str, str] = {
    "correction": "My surname is Ахметқызы, not <b>Akhmetova</b>",
    "full_name": "Ахметқызы Айгерим Нұрланқызы",
    "data_concerned": "all of it",
    "contact": "aigerim@mail.kz",
    "text": "Why do you send me adverts? <script>",
}


def person(language: str) -> Person:
    return Person(ALICE_ID, first_name="Aigerim", language_code=language)


def text(call: Call) -> str:
    return str(call.params.get("text", ""))


async def start_kind(desk: Desk, who: Person, kind: RequestKind, language: str) -> None:
    """/start, then the kind's button."""
    since = desk.mark()
    await desk.send(who, "/start")
    menu = await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    assert kind_name(language, kind.value) in buttons(menu)
    await desk.press(who, who.id, message_id(menu), KindChoice(kind=kind.value).pack())


async def answer_questions(desk: Desk, who: Person, kind: RequestKind, language: str) -> int:
    """Answers every question the kind asks; returns the mark before the identity question."""
    since = desk.mark()
    for name, question in DEFAULT_KINDS[kind].questions:
        await desk.expect(who.id, since, lambda c, q=question: text(c) == words(language, q))
        since = desk.mark()
        await desk.send(who, ANSWERS[name])
    if DEFAULT_KINDS[kind].evidence:
        asked = await desk.expect(
            who.id, since, lambda c: text(c) == words(language, "ask.evidence")
        )
        since = desk.mark()
        await desk.press(
            who, who.id, message_id(asked), buttons(asked)[words(language, "evidence.skip")]
        )
    await desk.expect(who.id, since, lambda c: text(c) == words(language, "identity.ask"))
    return desk.mark()


async def share_own_contact_and_confirm(desk: Desk, who: Person, language: str) -> Call:
    since = desk.mark()
    await desk.api.offer(desk.api.contact_message(who, who.id, PHONE))
    summary = await desk.expect(
        who.id, since, lambda c: SummaryChoice(action="confirm").pack() in buttons(c).values()
    )
    since = desk.mark()
    await desk.press(who, who.id, message_id(summary), SummaryChoice(action="confirm").pack())
    await desk.expect(who.id, since, lambda c: text(c) == words(language, "summary.sent"))
    return summary


async def code_in_outbox(sessions: async_sessionmaker[AsyncSession], vault: Vault) -> str:
    async with sessions() as session:
        row = (
            await session.scalars(
                select(OutboxItem)
                .where(
                    OutboxItem.template == "verification_code",
                    OutboxItem.channel == Channel.EMAIL.value,
                )
                .order_by(OutboxItem.id.desc())
            )
        ).first()
    assert row is not None
    params: dict[str, Any] = vault.decrypt_json(row.params_enc)
    return str(params["code"])


async def file_access(desk: Desk, service: RequestService, language: str = "en") -> str:
    """Alice files a complaint in ``language``, verified by her contact; its reference."""
    who = person(language)
    await start_kind(desk, who, RequestKind.COMPLAINT, language)
    await answer_questions(desk, who, RequestKind.COMPLAINT, language)
    await share_own_contact_and_confirm(desk, who, language)
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    return view.reference


def notice(template: str, language: str, reference: str, kind: str, **params: Any) -> str:
    """The notice's text exactly as the person receives it."""
    rendered = render_notification(
        template,
        language,
        {"reference": reference, "kind": kind, **params},
        escape=html.escape,
        context=DeskInfo().context(language),
    )
    return rendered.text


async def told(desk: Desk, since: int, expected: str) -> Call:
    """The message to Alice after ``since`` that reads ``expected``."""
    return await desk.expect(ALICE_ID, since, lambda c: text(c) == expected)
