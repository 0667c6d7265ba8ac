"""Leaving mailings happens at once (issue 16, item 7): no staff approval, the same day.

Once the person has proved who they are, the desk itself stops the mailings,
staff see the card done (no button left to approve), and the person hears it
in their language over their channel: Telegram (the real Bot over HTTP against
the Bot API stand-in) or e-mail (Dovecot in, aiosmtpd out). A request whose
sender has not proved who they are stops nothing. A directory that does not
answer alerts the staff group and leaves the request for Complete.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.callbacks import StaffAction, SummaryChoice
from mail.outcomes import Outcome
from tests.botapi import BotAPI, Call, Person
from tests.clocks import FrozenClock
from tests.conftest import STAFF_IDS
from tests.fulfilment_desk import CUSTOMER, FlakyDirectory
from tests.mail_desk import mail_channel
from tests.mail_letters import code_in, deliver, plain, quoted
from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server  # noqa: F401
from tests.staff_desk import DANA, press
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from tests.telegram_dialog import (
    ALICE_ID,
    answer_questions,
    code_in_outbox,
    notice,
    share_own_contact_and_confirm,
    start_kind,
    text,
    told,
)
from workflows.directory.sql_directory import SqlDirectory
from workflows.errors import NotAllowed
from workflows.fulfilment.work import Fulfilment
from workflows.i18n import status_name
from workflows.kinds import RequestKind
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

ALMATY = ZoneInfo("Asia/Almaty")
# Friday 27 November 2026, 23:40 in Almaty: twenty minutes of the day left.
LATE = datetime(2026, 11, 27, 23, 40, tzinfo=ALMATY)
# The e-mail of C-1001 in tests/data/customers.csv.
CUSTOMER_EMAIL = "aigerim.seitkali@mail.kz"
UNSUBSCRIBE = RequestKind.UNSUBSCRIBE


def approve_button(reference: str) -> str:
    return StaffAction(action="approve", reference=reference).pack()


def is_done_card(reference: str, call: Call) -> bool:
    """The staff card of ``reference``: completed by the desk at once, no button to approve."""
    return (
        reference in text(call)
        and html.escape(status_name("ru", "completed")) in text(call)
        and words("ru", "staff.card.at_once") in text(call)
        and approve_button(reference) not in str(call.params.get("reply_markup"))
    )


async def unsubscribe_in_the_bot(desk: Desk, service: RequestService, language: str) -> str:
    who = Person(ALICE_ID, first_name="Aigerim", language_code=language)
    await start_kind(desk, who, UNSUBSCRIBE, language)
    await answer_questions(desk, who, UNSUBSCRIBE, language)
    await share_own_contact_and_confirm(desk, who, language)
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)
    return view.reference


@pytest.fixture
def desk(directory: SqlDirectory, desk: Desk) -> Desk:
    """The shared running desk (conftest), with the customer directory imported first."""
    return desk


@pytest.mark.parametrize("language", ["kk", "ru", "en"])
async def test_a_verified_unsubscribe_in_the_bot_is_done_without_staff_the_same_day(
    desk: Desk,
    service: RequestService,
    directory: SqlDirectory,
    clock: FrozenClock,
    language: str,
) -> None:
    clock.set(LATE)
    since = desk.mark()
    reference = await unsubscribe_in_the_bot(desk, service, language)

    # The person hears it is done, in their language, without anyone pressing a button.
    await told(desk, since, notice("unsubscribed", language, reference, "unsubscribe"))
    (entry,) = await directory.suppressions()
    assert entry.customer_id == CUSTOMER
    assert entry.marketing_stopped_at is not None
    assert entry.processing_stopped_at is None and entry.blocked_at is None
    # Staff see the card done, nothing left to approve.
    await desk.expect(STAFF_CHAT, since, lambda c: is_done_card(reference, c))
    view = await service.get(reference, with_events=True)
    assert view.status == "completed"
    approve, complete = (e for e in view.events if e.action in ("approve", "complete"))
    assert (approve.actor, approve.channel, approve.details) == (
        "system",
        "desk",
        {"at_once": True},
    )
    assert (complete.actor, complete.details["flags"]) == ("system", ["marketing"])
    # The same day: the clock never moved past the day the request came in.
    assert clock.now() == LATE.astimezone(UTC)
    assert complete.at.astimezone(ALMATY).date() == view.received_at.astimezone(ALMATY).date()


async def test_an_unsubscribe_waiting_for_its_code_stops_nothing_until_the_code_comes(
    desk: Desk,
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    who = Person(ALICE_ID, first_name="Aigerim", language_code="ru")
    await start_kind(desk, who, UNSUBSCRIBE, "ru")
    await answer_questions(desk, who, UNSUBSCRIBE, "ru")
    since = desk.mark()
    await desk.send(who, CUSTOMER_EMAIL)
    summary = await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    since = desk.mark()
    await desk.press(who, who.id, message_id(summary), SummaryChoice(action="confirm").pack())
    await desk.expect(
        who.id, since, lambda c: text(c) == words("ru", "code.sent", email="a***@mail.kz")
    )
    (view,) = await service.list_requests(telegram_user_id=ALICE_ID)

    # Not proved yet: nothing is stopped, nobody is told it was, staff have nothing to do.
    assert view.status == "awaiting_verification"
    with pytest.raises(NotAllowed, match="verified"):
        await Fulfilment(service, directory, clock).at_once(view)
    code = await code_in_outbox(sessions, vault)
    wrong = "000000" if code != "000000" else "111111"
    await desk.send(who, wrong, expect=words("ru", "code.wrong", left=4))
    assert await directory.suppressions() == []
    assert (await service.get(view.reference)).status == "awaiting_verification"
    assert not [
        c for c in desk.api.calls() if c.chat_id == STAFF_CHAT and view.reference in text(c)
    ]

    # The right code: now it is done at once.
    since = desk.mark()
    await desk.send(who, code, expect=words("ru", "code.ok"))
    await told(desk, since, notice("unsubscribed", "ru", view.reference, "unsubscribe"))
    (entry,) = await directory.suppressions()
    assert entry.marketing_stopped_at is not None
    assert (await service.get(view.reference)).status == "completed"


async def test_a_directory_that_does_not_answer_alerts_staff_and_complete_finishes_it(
    api: BotAPI,
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    flaky = FlakyDirectory(sessions, vault, clock)
    desk = Desk(
        api,
        service,
        sessions,
        vault,
        clock,
        STAFF_IDS,
        fulfilment=Fulfilment(service, flaky, clock),
    )
    await desk.start()
    try:
        since = desk.mark()
        reference = await unsubscribe_in_the_bot(desk, service, "kk")

        reason = "ConnectionError: directory unreachable"
        alert = notice("staff_fulfilment_failed", "ru", reference, "unsubscribe", reason=reason)
        await desk.expect(STAFF_CHAT, since, lambda c: text(c) == alert)
        view = await service.get(reference, with_events=True)
        assert view.status == "approved"  # nothing lost: the request waits for Complete
        failed = view.events[-1]
        assert (failed.action, failed.actor, failed.details) == (
            "fulfilment_failed",
            "system",
            {"error": "ConnectionError"},
        )
        assert await directory.suppressions() == []
        unsubscribed = notice("unsubscribed", "kk", reference, "unsubscribe")
        assert not [c for c in api.calls()[since:] if text(c) == unsubscribed]

        # The directory is back: Complete on the card does it, and the person is told.
        flaky.down = False
        card = await desk.expect(
            STAFF_CHAT,
            since,
            lambda c: (
                reference in text(c)
                and StaffAction(action="complete", reference=reference).pack()
                in str(c.params.get("reply_markup"))
            ),
        )
        since = desk.mark()
        await press(desk, DANA, card, "complete", reference)
        await told(desk, since, notice("unsubscribed", "kk", reference, "unsubscribe"))
        assert (await service.get(reference)).status == "completed"
        (entry,) = await directory.suppressions()
        assert entry.marketing_stopped_at is not None
    finally:
        await desk.stop()


def letter(sender: str, subject: str, body: str, number: int, **headers: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = "aina.app@mercury.kz"
    mail["Subject"] = subject
    mail["Message-ID"] = f"<unsubscribe-{number}@mail.kz>"
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(body)
    return bytes(mail)


async def test_by_email_the_code_in_the_reply_stops_the_mailings_and_the_letter_says_so(
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    clock.set(LATE)
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        opened = await deliver(
            channel,
            dovecot,
            letter(
                CUSTOMER_EMAIL,
                "Хабарламалар тым көп",
                "Күніне үш-төрт рет хабарлама келеді. Жаңалықтар материалдарын жіберуден "
                "мені алып тастаңыздаршы. Есептік жазбам қала берсін, тек жарнама келмесін.",
                1,
            ),
        )
        assert opened.outcome is Outcome.OPENED and opened.reference is not None
        reference = opened.reference
        view = await service.get(reference)
        assert (view.kind, view.language, view.status) == (
            "unsubscribe",
            "kk",
            "awaiting_verification",
        )
        # A letter proves nothing of its From: nothing is stopped before the code comes back.
        assert await directory.suppressions() == []
        acknowledgement = plain(smtp_server)
        code = code_in(acknowledgement, reference)

        answered = await deliver(
            channel,
            dovecot,
            letter(
                CUSTOMER_EMAIL,
                f"Re: {smtp_server.letters[-1].message['Subject']}",
                f"{code}\n\n{quoted(acknowledgement)}\n",
                2,
                In_Reply_To=str(smtp_server.letters[-1].message["Message-ID"]),
            ),
        )
        assert answered.outcome is Outcome.VERIFIED
    finally:
        channel.poller.shutdown()

    (entry,) = await directory.suppressions()
    assert entry.customer_id == CUSTOMER and entry.marketing_stopped_at is not None
    done = await service.get(reference, with_events=True)
    assert done.status == "completed"
    # The confirmation went by e-mail, in Kazakh, to the proven address, the same day.
    confirmation = smtp_server.letters[-1]
    assert confirmation.recipients == [CUSTOMER_EMAIL]
    assert reference in str(confirmation.message["Subject"])
    expected = notice("unsubscribed", "kk", reference, "unsubscribe")
    assert " ".join(expected.split()[:4]) in " ".join(plain(smtp_server).split())
    assert clock.now() == LATE.astimezone(UTC)
    complete = next(e for e in done.events if e.action == "complete")
    assert complete.at.astimezone(ALMATY).date() == LATE.date()
