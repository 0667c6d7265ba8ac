"""A complaint is answered in words: staff write it, see it back, and the person receives it.

The answer goes to the person in their language over the channel they used
(Telegram, or e-mail for a complaint that came by letter), says the complaint
was considered, and names where to turn next: the authorised body with its
address, the local akimat and the court (policy, section 7). Nothing closes a
complaint without an answer.
"""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aina_dsr.runtime import desk_info
from aina_dsr.settings import load_settings
from mail.channel import build_mail_channel
from tests.botapi import BotAPI, Call
from tests.clocks import FrozenClock
from tests.conftest import STAFF_IDS
from tests.mail_desk import mail_settings, person_letter
from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server  # noqa: F401
from tests.staff_desk import (
    DANA,
    answer_prompt,
    press_draft,
    prompt_for,
    staff_presses,
    staff_words,
    the_card,
)
from tests.telegram_desk import STAFF_CHAT, Desk, words
from tests.telegram_dialog import ALICE_ID, file_access, text
from workflows.directory.sql_directory import SqlDirectory
from workflows.errors import DomainError
from workflows.fulfilment.work import Fulfilment
from workflows.persistence.tables import Message
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

DANA_ACTOR = Actor.staff(DANA.id, "Dana")


async def answered(desk: Desk, reference: str, answer: str, *, press: str = "approve") -> Call:
    """Dana presses ``press`` on the complaint's card, writes ``answer``, sees it back, sends it."""
    card = await the_card(desk, reference)
    since = await staff_presses(desk, DANA, card, press, reference)
    prompt = await prompt_for(desk, since, "staff.answer.prompt", reference)
    preview = await answer_prompt(desk, DANA, prompt, answer)
    assert text(preview) == words(
        "ru", "staff.answer.preview", reference=reference, text=html.escape(answer)
    )
    since = desk.mark()
    sent = await press_draft(desk, DANA, preview, "staff.draft.send")
    assert sent.params.get("show_alert") is not True
    return await desk.expect(STAFF_CHAT, since, lambda c: f"{reference} — " in text(c))


async def test_staff_write_the_answer_and_the_person_hears_it_was_considered_in_kazakh(
    desk: Desk, service: RequestService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    reference = await file_access(desk, service, "kk")  # a complaint, in Kazakh
    answer = "Деректеріңіз <тек> тапсырысты жеткізу үшін өңделеді."
    since = desk.mark()
    done = await answered(desk, reference, answer)
    # Staff read that it is considered, on the outcome and on the card.
    assert "Рассмотрено" in text(done)
    await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: reference in text(c) and "Рассмотрено" in text(c),
        methods=("editMessageText",),
    )

    notice = text(await desk.expect(ALICE_ID, since, lambda c: "тапсырысты" in text(c)))
    assert "&lt;тек&gt;" in notice  # the answer, as written, escaped
    assert "қаралды" in notice and "орындалды" not in notice
    # Where to turn next: the authorised body with its address, the akimat, the court.
    assert "Жасанды интеллект және цифрлық даму министрлігі" in notice
    assert "eotinish.kz" in notice
    assert "жергілікті әкімдік" in notice
    assert "- сот." in notice

    view = await service.get(reference, with_events=True)
    assert view.status == "completed"
    complete = next(e for e in view.events if e.action == "complete")
    assert (complete.actor_name, complete.details.get("answered")) == ("Dana", True)
    # The answer is kept with the request, among staff's words, encrypted at rest.
    assert answer in await staff_words(service, reference)
    async with sessions() as session:
        bodies = list(await session.scalars(select(Message.body_enc)))
    assert not any(answer.encode() in (body or b"") for body in bodies)


async def test_a_complaint_is_never_completed_without_an_answer(
    desk: Desk,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    reference = await file_access(desk, service, "ru")
    card = await the_card(desk, reference)
    since = await staff_presses(desk, DANA, card, "approve", reference)
    prompt = await prompt_for(desk, since, "staff.answer.prompt", reference)
    # A line that is not a reply to the prompt is not the answer; a cancelled answer goes nowhere.
    await desk.api.offer(desk.api.group_message(DANA, STAFF_CHAT, "сейчас отвечу"))
    preview = await answer_prompt(desk, DANA, prompt, "Черновик ответа")
    await press_draft(desk, DANA, preview, "staff.draft.cancel")
    await desk.expect(
        STAFF_CHAT,
        since,
        lambda c: text(c) == words("ru", "staff.draft.cancelled", reference=reference),
    )
    assert (await service.get(reference)).status == "verified"
    assert not any("рассмотрено" in text(c) for c in desk.api.sent_to(ALICE_ID))

    # Nor by the core's own doors: approving with no answer, completing with none.
    fulfilment = Fulfilment(service, SqlDirectory(sessions, vault, clock), clock)
    with pytest.raises(DomainError):
        await fulfilment.approve(reference, DANA_ACTOR)
    await service.approve(reference, DANA_ACTOR)  # approved, as before answers were asked for
    with pytest.raises(DomainError):
        await service.complete(reference, DANA_ACTOR)
    assert (await service.get(reference)).status == "approved"

    # Complete on the card of such a complaint asks for the answer too.
    answer = "Мы проверили: данные использовались только для доставки."
    await answered(desk, reference, answer, press="complete")
    notice = text(await desk.expect(ALICE_ID, 0, lambda c: "только для доставки" in text(c)))
    assert "рассмотрено" in notice
    assert (await service.get(reference)).status == "completed"


async def test_a_complaint_answer_names_the_authorised_body_the_settings_give(
    api: BotAPI,
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    settings = load_settings(
        authority_name_ru="Комитет по защите персональных данных",
        authority_address_ru="г. Астана, пр. Мангилик Ел, 8",
    )
    desk = Desk(api, service, sessions, vault, clock, STAFF_IDS, info=desk_info(settings))
    await desk.start()
    try:
        reference = await file_access(desk, service, "ru")
        since = desk.mark()
        await answered(desk, reference, "Рассылка Вам больше не придёт.")
        notice = text(await desk.expect(ALICE_ID, since, lambda c: "Рассылка" in text(c)))
    finally:
        await desk.stop()
    assert "Комитет по защите персональных данных (г. Астана, пр. Мангилик Ел, 8)" in notice
    assert "искусственного интеллекта" not in notice
    assert "местный акимат" in notice and "в суд" in notice


async def test_a_complaint_by_letter_gets_its_answer_by_letter(
    api: BotAPI,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    address = "asel@example.kz"
    settings = load_settings(
        authority_name_kk="Дербес деректерді қорғау комитеті",
        authority_address_kk="Астана қ., Мәңгілік Ел д-лы, 8",
    )
    channel = build_mail_channel(
        mail_settings(dovecot, smtp_server),
        service=service,
        sessions=sessions,
        vault=vault,
        clock=clock,
        info=desk_info(settings),
    )
    desk = Desk(api, service, sessions, vault, clock, STAFF_IDS)
    await desk.start()
    try:
        complaint = (
            "Сәлеметсіз бе! Кеше бөтен адам маған хабарласып, AINA-дағы соңғы тапсырысымды "
            "атады. Бұл деректер қалай бөтен адамның қолына түсті? Шағымымды қарауыңызды сұраймын."
        )
        dovecot.append(person_letter(address, "Шағым", complaint, 1))
        [taken] = await channel.poller.poll_once()
        await channel.dispatcher.run_once()
        assert taken.reference is not None
        reference = taken.reference
        [acknowledgement] = smtp_server.letters
        body = acknowledgement.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        code = re.search(r"(?<![\d-])(\d{6})(?!\d)", body.replace(reference, ""))
        assert code is not None
        dovecot.append(
            person_letter(
                address,
                "Re: " + str(acknowledgement.message["Subject"]),
                code.group(1),
                2,
                In_Reply_To=str(acknowledgement.message["Message-ID"]),
            )
        )
        await channel.poller.poll_once()
        assert (await service.get(reference)).kind == "complaint", "the letter reads as one"
        await channel.dispatcher.run_once()
        sent = len(smtp_server.letters)

        await answered(desk, reference, "Тексеру жүргіздік: деректер курьерлік қызметтен тараған.")
        await channel.dispatcher.run_once()
    finally:
        await desk.stop()
        await channel.poller.close()
        channel.poller.shutdown()

    [letter] = smtp_server.letters[sent:]
    assert letter.recipients == [address]
    assert reference in str(letter.message["Subject"])
    assert "қаралды" in str(letter.message["Subject"])
    plain = letter.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "курьерлік қызметтен тараған" in plain
    assert "қаралды" in plain
    # Where to turn next, the authorised body as the settings name it.
    assert "Дербес деректерді қорғау комитеті (Астана қ., Мәңгілік Ел д-лы, 8)" in plain
    assert "Жасанды интеллект" not in plain
    assert "жергілікті әкімдік" in plain and "- сот." in plain
    # Written by staff: not marked as an automatic message.
    assert letter.message["Auto-Submitted"] is None
    assert not any(reference in text(c) for c in desk.api.sent_to(ALICE_ID))
