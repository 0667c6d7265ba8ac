"""The e-mail channel's way out: outbox messages as real letters through SMTP.

One SMTP connection carries the letters of a busy spell (closed when the
outbox is idle, replaced when stale), instead of a connection per letter.

aiosmtplib adds no Message-ID, so the letter is built here: a Message-ID
derived from the outbox idempotency key (a redelivery keeps it, so a
receiving server or client can drop the copy), Date, In-Reply-To and
References to the person's own letters, the reference in the subject, and
``Auto-Submitted`` (RFC 3834) so that auto-responders do not answer us.
"""

from __future__ import annotations

import hashlib
import html
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Literal

import aiosmtplib

from workflows.clock import Clock
from workflows.errors import RequestNotFound
from workflows.i18n import DeskInfo, catalogue, format_date, pick_language, render_notification
from workflows.identity import InvalidEmail, normalize_email
from workflows.outbox.queue import (
    Audience,
    Channel,
    DeliveryReceipt,
    OutgoingMessage,
    PermanentFailure,
    RetryLater,
)
from workflows.privacy.masking import mask_email
from workflows.requests.queries import MailThread
from workflows.requests.service import RequestService

log = logging.getLogger(__name__)

Security = Literal["ssl", "starttls", "none"]
# Where a composed letter goes instead of an SMTP server (``aina-dsr demo``'s mail pane).
LetterTransport = Callable[[EmailMessage], Awaitable[None]]

# Answers to the person's own letter; other automatic notices are "auto-generated".
_AUTO_REPLIED = {
    "request_received",
    "request_received_code",
    "verification_code",
    "request_verified",
    "attachment_refused",
    "mail_too_large",
}
# Staff's own words (a question, a reason, a note, an answer): written by a person.
_WRITTEN_BY_STAFF = {
    "info_requested",
    "request_rejected",
    "request_completed",
    "complaint_answered",
}
_ACKNOWLEDGEMENTS = {"request_received", "request_received_code"}
_SYNTHETIC_DOMAIN = ".invalid>"
# A kept connection older than this is replaced before use (servers close idle ones).
_KEEP_OPEN = timedelta(seconds=30)


class SmtpSender:
    """Delivers ``Channel.EMAIL`` outbox messages; the outbox port of mail."""

    channel = Channel.EMAIL

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: Security,
        from_address: str,
        service: RequestService,
        clock: Clock,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        from_name: str = "AINA Privacy Desk",
        info: DeskInfo | None = None,  # the desk's details the texts name; else our own address
        transport: LetterTransport | None = None,  # instead of SMTP; the letter is the same
    ) -> None:
        self._host = host
        self._port = port
        self._security = security
        self._from = from_address
        self._from_name = from_name
        self._info = info or DeskInfo(mail_address=from_address)
        self._service = service
        self._clock = clock
        self._username = username
        self._password = password
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._domain = from_address.rpartition("@")[2] or "localhost"
        # One connection carries a run of letters; closed when idle or stale (_KEEP_OPEN).
        self._connection: aiosmtplib.SMTP | None = None
        self._used = datetime.min.replace(tzinfo=UTC)
        # The threads prepare() read for the batch being delivered; each used once.
        self._threads: dict[str, MailThread] = {}
        self._transport = transport

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        if message.audience is not Audience.SUBJECT or not message.address:
            raise PermanentFailure("an e-mail needs a person's address")
        try:
            # The last guard before a header: one plain address, no line break, nothing more.
            normalize_email(message.address)
        except InvalidEmail:
            raise PermanentFailure("the address is not one plain e-mail address") from None
        letter, text = await self.compose(message)
        try:
            await self._send(letter)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [error.code for error in exc.recipients]
            if codes and all(code >= 500 for code in codes):
                raise PermanentFailure(f"recipient refused ({codes[0]})") from None
            raise RetryLater(f"recipient deferred ({codes[0] if codes else '?'})") from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A wrong password is the operator's to fix; the letter itself is fine.
            log.error("SMTP login refused (%s); check DSR_SMTP_USER/PASSWORD", exc.code)
            raise RetryLater(f"SMTP login refused ({exc.code})") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise PermanentFailure(f"SMTP {exc.code}: {exc.message[:200]}") from None
            raise RetryLater(f"SMTP {exc.code}: {exc.message[:200]}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetryLater(f"SMTP unavailable: {type(exc).__name__}") from None
        log.info(
            "mail %s sent to %s (%s)",
            message.reference,
            mask_email(message.address),
            message.template,
        )
        return DeliveryReceipt(external_id=str(letter["Message-ID"]), body=text)

    async def prepare(self, messages: Sequence[OutgoingMessage]) -> None:
        """Read the threads of a claimed batch's requests in one query (see compose)."""
        references = {message.reference for message in messages if message.reference}
        self._threads = await self._service.mail_threads(references)

    async def _send(self, letter: EmailMessage) -> None:
        """Over the open connection when there is one; a stale one is replaced once."""
        if self._transport is not None:
            await self._transport(letter)
            self._used = self._clock.now()
            return
        reused = self._connection is not None
        try:
            await (await self._connected()).send_message(letter)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
            self._drop()
            if not reused:
                raise
            # The server closed a connection we kept (an idle timeout): a new one, once.
            await (await self._connected()).send_message(letter)
        except BaseException:
            self._drop()
            raise
        self._used = self._clock.now()

    async def _connected(self) -> aiosmtplib.SMTP:
        client = self._connection
        if client is not None and (
            not client.is_connected or self._clock.now() - self._used > _KEEP_OPEN
        ):
            await self.close()
            client = None
        if client is None:
            client = aiosmtplib.SMTP(
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                use_tls=self._security == "ssl",
                start_tls=self._security == "starttls",
                tls_context=self._ssl_context,
                timeout=self._timeout,
            )
            try:
                await client.connect()
            except BaseException:
                client.close()
                raise
            self._connection = client
        return client

    def _drop(self) -> None:
        client, self._connection = self._connection, None
        if client is not None:
            client.close()

    async def close(self) -> None:
        """Say goodbye on the kept connection (the channel calls this when the outbox is idle)."""
        client, self._connection = self._connection, None
        if client is None:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    def message_id(self, message: OutgoingMessage) -> str:
        """The same Message-ID for every delivery of one outbox message."""
        digest = hashlib.sha256(message.idempotency_key.encode("utf-8")).hexdigest()[:32]
        return f"<{digest}@{self._domain}>"

    async def compose(self, message: OutgoingMessage) -> tuple[EmailMessage, str]:
        """The letter for ``message`` and its plain text."""
        language = pick_language(message.language)
        context = self._info.context(language)  # the desk's details, as the bot names them
        rendered = render_notification(message.template, language, message.params, context=context)
        thread: MailThread | None = None
        if message.reference:
            # Taken once: a second letter of the batch about the same request reads the
            # thread again, with the first one's Message-ID in it.
            thread = self._threads.pop(message.reference, None)
            if thread is None:
                try:
                    thread = await self._service.mail_thread(message.reference)
                except RequestNotFound:
                    thread = None
        paragraphs = [rendered.text]
        if message.template in _ACKNOWLEDGEMENTS and message.reference and thread is not None:
            paragraphs.extend(self._acknowledgement(thread, message.reference, language))
        paragraphs.append(catalogue().text(language, "mail.signature", **context))
        text = "\n\n".join(p.strip() for p in paragraphs if p.strip())
        subject = rendered.subject
        if message.reference and message.reference not in subject:
            subject = f"[{message.reference}] {subject}"

        letter = EmailMessage()
        letter["From"] = formataddr((self._from_name, self._from))
        letter["To"] = message.address or ""
        letter["Subject"] = subject
        letter["Date"] = format_datetime(self._clock.now())
        letter["Message-ID"] = self.message_id(message)
        letter["Content-Language"] = language
        if message.template not in _WRITTEN_BY_STAFF:
            kind = "auto-replied" if message.template in _AUTO_REPLIED else "auto-generated"
            letter["Auto-Submitted"] = kind
            letter["X-Auto-Response-Suppress"] = "All"
        if thread is not None:
            self._thread(letter, thread)
        elif isinstance(theirs := message.params.get("in_reply_to"), str) and theirs:
            # An answer to a letter that opened no request (one too large to take).
            letter["In-Reply-To"] = letter["References"] = theirs
        letter.set_content(text)
        letter.add_alternative(_as_html(text, language), subtype="html")
        ids = message.params.get("documents")
        if ids and message.reference:
            # The files the desk sends with the notice (an access report's PDF and JSON).
            for item in await self._service.documents(message.reference, [int(i) for i in ids]):
                maintype, _, subtype = item.content_type.partition("/")
                if not subtype:
                    maintype, subtype = "application", "octet-stream"
                letter.add_attachment(
                    item.data, maintype=maintype, subtype=subtype, filename=item.filename
                )
        return letter, text

    def _acknowledgement(self, thread: MailThread, reference: str, language: str) -> list[str]:
        """Due date, what is missing and how to follow up (the issue's item 7)."""
        texts = catalogue()
        lines: list[str] = []
        if thread.due_at is not None:
            due = format_date(language, self._service.calendar.local_date(thread.due_at))
            lines.append(texts.text(language, "mail.ack.due", due=due))
        else:
            lines.append(texts.text(language, "mail.ack.no_due"))
        if thread.missing_fields:
            names = [
                texts.text(language, "mail.or").join(
                    texts.text(language, f"field.{name}") for name in group.split("|")
                )
                for group in thread.missing_fields
            ]
            lines.append(texts.text(language, "mail.ack.missing", fields="; ".join(names)))
        lines.append(texts.text(language, "mail.ack.follow_up", reference=reference))
        return ["\n".join(lines)]

    @staticmethod
    def _thread(letter: EmailMessage, thread: MailThread) -> None:
        known = thread.message_ids
        ids = [mid for _, mid in known if not mid.endswith(_SYNTHETIC_DOMAIN)]
        theirs = [mid for direction, mid in known if direction == "in" and mid in ids]
        if theirs:
            letter["In-Reply-To"] = theirs[-1]
        if ids:
            letter["References"] = " ".join(ids[-10:])


def _as_html(text: str, language: str) -> str:
    body = "".join(
        f"<p>{html.escape(block).replace(chr(10), '<br>')}</p>"
        for block in text.split("\n\n")
        if block.strip()
    )
    return (
        f'<!DOCTYPE html><html lang="{language}"><head><meta charset="utf-8"></head>'
        f'<body style="font-family: sans-serif">{body}</body></html>'
    )
