"""A letter in each language, through Dovecot and aiosmtpd, to a verified request."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.outcomes import Outcome
from tests.clocks import FrozenClock
from tests.mail_desk import mail_channel, person_letter
from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server  # noqa: F401
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

LETTERS = {
    "kk": (
        "Дербес деректерді жинауға, өңдеуге келісімді кері қайтарып алу",
        "Сәлеметсіз бе! Дербес деректерімді өңдеуге келісімді кері қайтарып аламын.\n"
        "ТАӘ: Серікова Әлия\nТелефон: +7 701 111 22 33\nДеректер: барлық деректерім\n",
        "withdraw_consent",
        "Жауап беру мерзімі",
    ),
    "ru": (
        "Удаление аккаунта",
        "Здравствуйте! Прошу удалить мою учётную запись в AINA.\nФИО: Орлова Анна\n",
        "delete_account",
        "Срок нашего ответа",
    ),
    "en": (
        "Subject access request",
        "Hello, please tell me what personal data you hold about me.\nJohn Doe\n",
        "access",
        "Deadline for our answer",
    ),
}


@pytest.mark.parametrize("language", ["kk", "ru", "en"])
async def test_a_letter_becomes_a_request_and_the_code_in_a_reply_verifies_it(
    language: str,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    subject, text, kind, due_words = LETTERS[language]
    address = f"person.{language}@example.kz"
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        dovecot.append(person_letter(address, subject, text, 1))
        [taken] = await channel.poller.poll_once()
        await channel.dispatcher.run_once()

        assert taken.outcome is Outcome.OPENED and taken.reference is not None
        view = await service.get(taken.reference)
        assert (view.kind, view.language, view.status) == (
            kind,
            language,
            "awaiting_verification",
        )
        [acknowledgement] = smtp_server.letters
        assert acknowledgement.recipients == [address]
        body = acknowledgement.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert due_words in body and taken.reference in str(acknowledgement.message["Subject"])
        code = re.search(r"(?<![\d-])(\d{6})(?!\d)", body.replace(taken.reference, ""))
        assert code is not None

        # The person replies from a phone: the code on top, our letter quoted below.
        quoted = "\n".join("> " + line for line in body.splitlines())
        reply = person_letter(
            address,
            "Re: " + str(acknowledgement.message["Subject"]),
            f"{code.group(1)}\n\n{quoted}\n",
            2,
            In_Reply_To=str(acknowledgement.message["Message-ID"]),
            References=str(acknowledgement.message["Message-ID"]),
        )
        dovecot.append(reply)
        [answered] = await channel.poller.poll_once()
        await channel.dispatcher.run_once()

        assert (answered.outcome, answered.reference) == (Outcome.VERIFIED, taken.reference)
        verified = await service.get(taken.reference)
        assert (verified.status, verified.verified_by) == ("verified", "email_code")
        assert len(await service.list_requests()) == 1
        confirmation = smtp_server.letters[-1].message
        # A bare code is not kept as a message (staff need no notice of it), so the
        # confirmation threads on the person's letter and our acknowledgement.
        assert confirmation["In-Reply-To"] == "<person-1@example.kz>"
        assert str(acknowledgement.message["Message-ID"]) in str(confirmation["References"])
        assert taken.reference in str(confirmation["Subject"])
    finally:
        await channel.poller.close()
        channel.poller.shutdown()


async def test_auto_replies_get_no_answer_and_the_component_runs_until_stopped(
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(channel.run(stop))
    try:
        dovecot.append(
            person_letter(
                "away@example.kz",
                "Out of office: Delete my account",
                "I am away until Monday.",
                1,
                Auto_Submitted="auto-replied",
            )
        )
        dovecot.append(person_letter("real@example.kz", "Unsubscribe", "Unsubscribe me.", 2))
        for _ in range(400):  # bounded: 20 s at most
            if smtp_server.letters:
                break
            await asyncio.sleep(0.05)
        [answer] = smtp_server.letters
        assert answer.recipients == ["real@example.kz"]
        assert len(await service.list_requests()) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert channel.name == "mail"
