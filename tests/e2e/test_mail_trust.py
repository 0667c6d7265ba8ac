"""Sender trust (issue 12): who a letter is from, and what a letter may prove.

Every story goes through the real Dovecot (the letters arrive by IMAP) and the
real aiosmtpd (what the desk sends is what the SMTP server received); what
staff see goes through the Telegram channel against the Bot API stand-in.
"""

from __future__ import annotations

import html

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.callbacks import SummaryChoice
from mail.authentication import dmarc_failed, parse_authentication_results
from mail.outcomes import Outcome
from mail.parsing import parse_mail
from tests.botapi import Person
from tests.clocks import FrozenClock
from tests.mail_desk import mail_channel, sender_for
from tests.mail_letters import code_in, deliver, plain, quoted
from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server  # noqa: F401
from tests.telegram_desk import STAFF_CHAT, Desk, buttons, message_id, words
from tests.telegram_dialog import answer_questions, start_kind, text
from workflows.kinds import RequestKind
from workflows.outbox.queue import Audience, Channel, OutgoingMessage, PermanentFailure
from workflows.persistence.tables import InboundMail, StaffCard
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

VICTIM = "aliya@example.kz"
MALLORY = "mallory@evil.example"
OUR_MX = "mx.mercury.kz"


def raw_letter(
    sender: str,
    subject: str,
    body: str,
    number: int,
    *headers: tuple[str, str],
) -> bytes:
    """A letter as a sender's program writes it, headers byte for byte (no re-encoding)."""
    lines = [
        *(f"{name}: {value}" for name, value in headers),
        f"From: {sender}",
        "To: aina.app@mercury.kz",
        f"Subject: {subject}",
        f"Message-ID: <trust-{number}@example.kz>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        body.replace("\n", "\r\n"),
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def recipients(smtp: SmtpServer) -> list[str]:
    return [address for letter in smtp.letters for address in letter.recipients]


async def staff_texts(desk: Desk, since: int = 0) -> list[str]:
    return [
        text(c)
        for c in desk.api.calls()[since:]
        if c.method in ("sendMessage", "editMessageText") and str(c.chat_id) == str(STAFF_CHAT)
    ]


# -- 1. the address comes from the addr-spec, never from a display name ---------------------

FORGED_NAMES = {
    "an address encoded as the name": "=?utf-8?q?aliya=40example.kz?= <mallory@evil.example>",
    "an address in base64 as the name": (
        "=?utf-8?b?YWxpeWFAZXhhbXBsZS5reg==?= <mallory@evil.example>"
    ),
    "a list hidden in the name": "=?utf-8?q?x=2C_aliya=40example.kz?= <mallory@evil.example>",
    "a quoted address as the name": '"aliya@example.kz" <mallory@evil.example>',
}


@pytest.mark.parametrize("sender", FORGED_NAMES.values(), ids=FORGED_NAMES.keys())
async def test_an_address_in_the_display_name_is_never_written_to(
    sender: str,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        taken = await deliver(
            channel, dovecot, raw_letter(sender, "Delete my account", "Delete my account.", 1)
        )
    finally:
        channel.poller.shutdown()

    assert VICTIM not in recipients(smtp_server)
    # The letter is the sender's own: its acknowledgement goes to the addr-spec.
    assert taken.outcome is Outcome.OPENED
    assert recipients(smtp_server) == [MALLORY]


CRLF_NAMES = {
    "quoted-printable": (
        "=?utf-8?q?Support=0D=0ABcc=3A_someone=40else=2Eexample?= <mallory@evil.example>"
    ),
    "base64": "=?utf-8?b?U3VwcG9ydA0KQmNjOiBzb21lb25lQGVsc2UuZXhhbXBsZQ==?= <mallory@evil.example>",
}


@pytest.mark.parametrize("sender", CRLF_NAMES.values(), ids=CRLF_NAMES.keys())
async def test_a_line_break_and_bcc_in_the_display_name_reach_no_header_and_no_one(
    sender: str,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        taken = await deliver(
            channel,
            dovecot,
            raw_letter(sender, "Delete my account", "Please delete my account.", 1),
        )
    finally:
        channel.poller.shutdown()

    assert "someone@else.example" not in recipients(smtp_server)
    assert recipients(smtp_server) == [MALLORY]
    [acknowledgement] = smtp_server.letters
    assert acknowledgement.message["Bcc"] is None
    assert all("\r" not in str(v) and "\n" not in str(v) for v in acknowledgement.message.values())
    assert taken.reference is not None
    view = await service.get(taken.reference)
    assert all("\r" not in str(value) and "\n" not in str(value) for value in view.fields.values())


async def test_an_encoded_word_in_place_of_the_address_is_no_address(
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        taken = await deliver(
            channel,
            dovecot,
            raw_letter("<=?utf-8?q?aliya=40example.kz?=>", "Delete my account", "Delete it.", 1),
        )
    finally:
        channel.poller.shutdown()

    assert taken.outcome is Outcome.QUARANTINED
    assert smtp_server.letters == []
    assert await service.list_requests() == []


@pytest.mark.parametrize(
    "address",
    ["aliya@example.kz\r\nBcc: someone@else.example", "Aliya <aliya@example.kz>", "a@b.kz, c@d.kz"],
)
async def test_the_sender_writes_to_one_plain_address_or_to_no_one(
    address: str,
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    clock: FrozenClock,
) -> None:
    sender = sender_for(smtp_server, service, clock)
    message = OutgoingMessage(
        id=1,
        idempotency_key="trust/1",
        reference=None,
        channel=Channel.EMAIL,
        audience=Audience.SUBJECT,
        address=address,
        template="verification_code",
        language="en",
        params={"reference": "DSR-2026-000001", "code": "123456"},
        attempt=0,
    )
    try:
        with pytest.raises(PermanentFailure):
            await sender.deliver(message)
    finally:
        await sender.close()

    assert smtp_server.letters == []


# -- 3 and 4. a code counts only in the reply's own words; every reply reaches staff --------


async def test_the_victims_not_me_reply_quoting_the_code_does_not_verify_and_staff_read_it(
    desk: Desk,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        # Mallory writes as Aliya (a forged From) and asks to delete her account.
        forged = await deliver(
            channel,
            dovecot,
            raw_letter(VICTIM, "Delete my account", "Please delete my account.", 1),
        )
        assert forged.reference is not None
        [acknowledgement] = smtp_server.letters
        assert acknowledgement.recipients == [VICTIM]
        ours = plain(smtp_server)
        assert code_in(ours, forged.reference)

        # Aliya answers, her mail program quoting our letter (and its code) below her words.
        since = desk.mark()
        answer = await deliver(
            channel,
            dovecot,
            raw_letter(
                VICTIM,
                "Re: " + str(acknowledgement.message["Subject"]),
                "That was not me! Do not delete <anything>.\n\n"
                f"On Tue, 24 Nov 2026 AINA Privacy Desk wrote:\n{quoted(ours)}\n",
                2,
                ("In-Reply-To", str(acknowledgement.message["Message-ID"])),
            ),
        )
    finally:
        channel.poller.shutdown()

    assert (answer.outcome, answer.reference) == (Outcome.ATTACHED, forged.reference)
    view = await service.get(forged.reference)
    assert (view.status, view.verified_by) == ("awaiting_verification", None)
    assert len(smtp_server.letters) == 1  # no "verified" letter
    bodies = [body or "" for _, _, body in await service.messages(forged.reference)]
    assert any("That was not me!" in body for body in bodies)
    shown = await desk.expect(
        STAFF_CHAT, since, lambda c: "That was not me!" in text(c), methods=("sendMessage",)
    )
    assert forged.reference in text(shown)
    assert html.escape("<anything>") in text(shown)
    assert "<anything>" not in text(shown)
    assert "a***@example.kz" in text(shown)


async def test_a_reply_to_a_verified_request_reaches_staff_under_its_card(
    desk: Desk,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        opened = await deliver(
            channel, dovecot, raw_letter(VICTIM, "Unsubscribe", "Unsubscribe me please.", 1)
        )
        assert opened.reference is not None
        code = code_in(plain(smtp_server), opened.reference)
        verified = await deliver(
            channel, dovecot, raw_letter(VICTIM, f"Re: [{opened.reference}]", code, 2)
        )
        assert verified.outcome is Outcome.VERIFIED
        card = await desk.expect(
            STAFF_CHAT, 0, lambda c: opened.reference in text(c), methods=("sendMessage",)
        )
        long_words = "I also get SMS from you.\n" + "Stop them & the calls too.\n" * 400
        since = desk.mark()
        follow_up = await deliver(
            channel,
            dovecot,
            raw_letter(VICTIM, f"Re: [{opened.reference}]", long_words, 3),
        )
    finally:
        channel.poller.shutdown()

    assert follow_up.outcome is Outcome.ATTACHED
    shown = await desk.expect(
        STAFF_CHAT, since, lambda c: "I also get SMS" in text(c), methods=("sendMessage",)
    )
    assert (shown.params.get("reply_parameters") or {}).get("message_id") == message_id(card)
    assert len(text(shown)) < 4096 and "&amp;" in text(shown)
    async with sessions() as session:
        assert await session.get(StaffCard, opened.request_id) is not None


async def test_a_reply_to_a_closed_request_is_kept_with_it_and_shown_to_staff(
    desk: Desk,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        opened = await deliver(
            channel, dovecot, raw_letter(VICTIM, "Delete my account", "Delete my account.", 1)
        )
        assert opened.reference is not None
        await service.cancel(opened.reference, Actor.person_email(VICTIM))
        while await channel.dispatcher.run_once():
            pass
        sent = len(smtp_server.letters)
        since = desk.mark()
        late = await deliver(
            channel,
            dovecot,
            raw_letter(VICTIM, f"Re: [{opened.reference}]", "Sorry, I cancelled it by mistake.", 2),
        )
    finally:
        channel.poller.shutdown()

    assert (late.outcome, late.reference) == (Outcome.ATTACHED, opened.reference)
    assert len(await service.list_requests()) == 1
    assert len(smtp_server.letters) == sent
    bodies = [body or "" for _, _, body in await service.messages(opened.reference)]
    assert any("by mistake" in body for body in bodies)
    await desk.expect(STAFF_CHAT, since, lambda c: "by mistake" in text(c))


# -- 5. an e-mailed code is taken only from the address it was sent to ----------------------


async def test_wrong_codes_from_another_address_leave_the_real_code_working(
    desk: Desk,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    # Aliya files in Telegram and asks for her code by e-mail.
    who = Person(700300, first_name="Aliya", language_code="en")
    await start_kind(desk, who, RequestKind.UNSUBSCRIBE, "en")
    await answer_questions(desk, who, RequestKind.UNSUBSCRIBE, "en")
    since = desk.mark()
    await desk.send(who, VICTIM)
    summary = await desk.expect(who.id, since, lambda c: bool(buttons(c)))
    since = desk.mark()
    await desk.press(who, who.id, message_id(summary), SummaryChoice(action="confirm").pack())
    await desk.expect(
        who.id, since, lambda c: text(c) == words("en", "code.sent", email="a***@example.kz")
    )
    [view] = await service.list_requests(telegram_user_id=who.id)
    reference = view.reference
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        while await channel.dispatcher.run_once():
            pass
        assert recipients(smtp_server) == [VICTIM]
        code = code_in(plain(smtp_server), reference)
        # Mallory knows the reference (a screenshot, a guess) and tries codes by e-mail.
        wrong = [f"{n:06d}" for n in range(100000, 999999, 137731) if f"{n:06d}" != code][:6]
        results = [
            await deliver(
                channel,
                dovecot,
                raw_letter(MALLORY, f"Re: [{reference}]", ", ".join(wrong[i : i + 3]), 10 + i),
            )
            for i in (0, 3)
        ]
    finally:
        channel.poller.shutdown()

    assert all(r.outcome is not Outcome.VERIFIED for r in results)
    checked = await service.get(reference, with_events=True)
    assert checked.status == "awaiting_verification"
    refusals = [e.details for e in checked.events if e.action == "code_refused"]
    assert refusals and all(d.get("sender") == "m***@evil.example" for d in refusals)
    assert all(MALLORY not in str(d) for d in refusals)
    # Aliya's code still works.
    await desk.send(who, code, expect=words("en", "code.ok"))
    assert (await service.get(reference)).verified_by == "email_code"


# -- 2. DMARC, as our own mail server reports it ---------------------------------------------


def _results(authserv_id: str, dmarc: str) -> tuple[str, str]:
    return (
        "Authentication-Results",
        f"{authserv_id};\r\n\tspf=pass smtp.mailfrom=evil.example;\r\n\tdkim=none (no signature);"
        f"\r\n\tdmarc={dmarc} (p=NONE sp=NONE) header.from=example.kz",
    )


async def test_a_letter_failing_dmarc_is_not_answered_and_staff_are_told(
    desk: Desk,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(
        dovecot, smtp_server, service, sessions, vault, clock, authserv_id=OUR_MX
    )
    since = desk.mark()
    try:
        taken = await deliver(
            channel,
            dovecot,
            raw_letter(
                VICTIM,
                "<b>Delete</b> my account",
                "Please delete my account & all my data.\nAliya",
                1,
                _results(OUR_MX, "fail"),
            ),
        )
    finally:
        channel.poller.shutdown()

    assert taken.outcome == "sender_unverified"
    assert smtp_server.letters == []
    assert await service.list_requests() == []
    async with sessions() as session:
        row = (await session.scalars(select(InboundMail))).one()
    assert row.outcome == "sender_unverified" and row.raw_enc is not None
    assert b"delete my account & all my data" in vault.decrypt_bytes(row.raw_enc)
    shown = await desk.expect(
        STAFF_CHAT, since, lambda c: "a***@example.kz" in text(c), methods=("sendMessage",)
    )
    assert "&lt;b&gt;Delete&lt;/b&gt; my account" in text(shown)
    assert "delete my account &amp; all my data" in text(shown)
    assert VICTIM not in text(shown)


FORGED_RESULTS = {
    "a forged pass beside our fail": (
        (_results("mx.evil.example", "pass"), _results(OUR_MX, "fail")),
        "sender_unverified",
    ),
    "a forged fail from another server": ((_results("mx.evil.example", "fail"),), "opened"),
    "our fail, a look-alike id": ((_results("mx.mercury.kz.evil.example", "fail"),), "opened"),
}


@pytest.mark.parametrize(
    ("headers", "expected"), FORGED_RESULTS.values(), ids=FORGED_RESULTS.keys()
)
async def test_authentication_results_of_another_authserv_id_are_ignored(
    headers: tuple[tuple[str, str], ...],
    expected: str,
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(
        dovecot, smtp_server, service, sessions, vault, clock, authserv_id=OUR_MX
    )
    try:
        taken = await deliver(
            channel,
            dovecot,
            raw_letter(VICTIM, "Unsubscribe", "Unsubscribe me please.", 1, *headers),
        )
    finally:
        channel.poller.shutdown()

    assert taken.outcome == expected
    assert recipients(smtp_server) == ([VICTIM] if expected == "opened" else [])


async def test_without_an_authserv_id_no_authentication_results_are_trusted(
    dovecot: Dovecot,  # noqa: F811
    smtp_server: SmtpServer,  # noqa: F811
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    channel = mail_channel(dovecot, smtp_server, service, sessions, vault, clock)
    try:
        taken = await deliver(
            channel,
            dovecot,
            raw_letter(VICTIM, "Unsubscribe", "Unsubscribe me.", 1, _results(OUR_MX, "fail")),
        )
    finally:
        channel.poller.shutdown()

    assert taken.outcome is Outcome.OPENED
    assert recipients(smtp_server) == [VICTIM]


# -- the pieces, without servers -------------------------------------------------------------


def test_authentication_results_are_read_as_rfc_8601_writes_them() -> None:
    header = (
        'mx.Mercury.kz 1 (our edge); spf=pass (sender "ok") smtp.mailfrom=a.kz;'
        " dkim/1=fail (bad sig) header.d=a.kz; dmarc = fail (p=reject) header.from=a.kz"
    )
    parsed = parse_authentication_results(header)
    assert parsed is not None
    assert parsed.authserv_id == "mx.Mercury.kz"
    assert parsed.results == (("spf", "pass"), ("dkim", "fail"), ("dmarc", "fail"))
    assert dmarc_failed([header], "mx.mercury.kz")
    assert not dmarc_failed([header], None)
    assert not dmarc_failed([header], "mercury.kz")
    assert not dmarc_failed(["mx.mercury.kz; none"], "mx.mercury.kz")
    assert not dmarc_failed(["mx.mercury.kz; dmarc=pass header.from=a.kz"], "mx.mercury.kz")
    # A comment or a quoted string cannot smuggle in a result or another authserv-id.
    assert not dmarc_failed(["(mx.mercury.kz) evil.example; dmarc=fail"], "mx.mercury.kz")
    assert not dmarc_failed(['mx.mercury.kz; x=y reason="; dmarc=fail"'], "mx.mercury.kz")
    assert parse_authentication_results(" (only a comment) ") is None


FROM_HEADERS = {
    "Aliya <Aliya@Example.KZ>": ("aliya@example.kz", "Aliya"),
    "aliya@example.kz (Aliya S.)": ("aliya@example.kz", "Aliya S."),
    '"Doe, John" <john@example.com>': ("john@example.com", "Doe, John"),
    "=?utf-8?q?aliya=40example.kz?= <mallory@evil.example>": (
        "mallory@evil.example",
        "aliya@example.kz",
    ),
    "=?utf-8?q?A=0D=0ABcc=3A_x=40y.kz?= <m@evil.example>": ("m@evil.example", "A Bcc: x@y.kz"),
    "Doe, John <john@example.com>": (None, ""),
    "a@example.kz, b@example.kz": (None, ""),
    "undisclosed-recipients:;": (None, ""),
    "<a@example.kz> <b@example.kz>": (None, ""),
    "Name <a@example.kz": (None, ""),
    "<=?utf-8?q?aliya=40example.kz?=>": (None, ""),
    "Иван без адреса": (None, ""),
}


@pytest.mark.parametrize(("header", "expected"), FROM_HEADERS.items(), ids=list(FROM_HEADERS))
def test_only_the_addr_spec_of_one_mailbox_is_an_address(
    header: str, expected: tuple[str | None, str]
) -> None:
    mail = parse_mail(raw_letter(header, "Hello", "Hello.", 1))
    assert (mail.sender, mail.sender_name if mail.sender else "") == expected
    assert "\r" not in mail.sender_name and "\n" not in mail.sender_name


def test_two_from_headers_give_no_address() -> None:
    mail = parse_mail(raw_letter("mallory@evil.example", "Hello", "Hi.", 1, ("From", VICTIM)))
    assert mail.sender is None and "bad From address" in mail.problems
