"""By e-mail, a correction's clock runs from the letter that brings its documents.

Through Dovecot and aiosmtpd: a reply with the scan attached, after staff asked for it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from email.message import EmailMessage

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.outcomes import Outcome
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.mail_desk import mail_channel
from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server  # noqa: F401
from workflows.i18n import format_date
from workflows.privacy.vault import Vault
from workflows.requests.intake import EmailOpening
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ADDRESS = "aigerim.nurlanovna@example.kz"
DANA = Actor.staff(STAFF_ID, "Dana")


def reply_with_scan(subject: str, in_reply_to: str) -> bytes:
    letter = EmailMessage()
    letter["From"] = ADDRESS
    letter["To"] = "aina.app@mercury.kz"
    letter["Subject"] = "Re: " + subject
    letter["Message-ID"] = "<person-scan@example.kz>"
    letter["In-Reply-To"] = in_reply_to
    letter["References"] = in_reply_to
    letter.set_content("Добрый день, копия свидетельства о браке во вложении.")
    letter.add_attachment(
        b"%PDF-1.4 marriage certificate", "application", "pdf", filename="certificate.pdf"
    )
    return bytes(letter)


async def test_documents_attached_to_a_reply_start_the_correction_clock_from_their_arrival(
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    clock.set(datetime(2026, 12, 10, 5, 0, tzinfo=UTC))  # Thursday, 10:00 in Almaty
    (view,) = await service.open_by_email(
        [
            EmailOpening(
                kind="rectify",
                language="ru",
                fields={"correction": "фамилия"},
                email=ADDRESS,
                body="Прошу исправить мою фамилию.",
                external_id=None,
            )
        ]
    )
    reference = view.reference
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        await channel.dispatcher.run_once()
        code = next(
            word
            for word in smtp_server.letters[0].message.get_body(("plain",)).get_content().split()  # type: ignore[union-attr]
            if len(word.strip(".")) == 6 and word.strip(".").isdigit()
        )
        await service.verify_by_code(reference, code.strip("."), Actor.person_email(ADDRESS))
        await service.ask_info(reference, DANA, "Пришлите, пожалуйста, копию свидетельства.")
        await channel.dispatcher.run_once()
        question = smtp_server.letters[-1].message
        assert (await service.get(reference)).due_at is None

        # The reply with the scan comes on Tuesday 15 December: one working day after it,
        # over Independence Day, is Thursday the 17th.
        clock.set(datetime(2026, 12, 15, 11, 0, tzinfo=UTC))
        dovecot.append(reply_with_scan(str(question["Subject"]), str(question["Message-ID"])))
        [answered] = await channel.poller.poll_once()
        assert (answered.outcome, answered.reference) == (Outcome.ATTACHED, reference)
        await channel.dispatcher.run_once()

        current = await service.get(reference)
        assert current.clock_started_at == clock.now()
        assert service.calendar.local_date(current.due_at) == date(2026, 12, 17)  # type: ignore[arg-type]
        (evidence,) = await service.evidence(reference)
        assert evidence.filename == "certificate.pdf"
        told = smtp_server.letters[-1].message
        body = told.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert reference in str(told["Subject"])
        assert format_date("ru", date(2026, 12, 17)) in body
    finally:
        await channel.poller.close()
        channel.poller.shutdown()
