"""The demo's mail: an in-memory mailbox the desk reads, and the letters it sends, for the page.

The desk's mail channel keeps everything it does with a letter (parsing,
classification, trust checks, the caps, the outbox and the composed reply);
only its two ends are plugged in here (:class:`mail.channel.MailPorts`):
:class:`MemoryMailbox` stands where the IMAP folder is, and
:meth:`Mailroom.take` where the SMTP server is. A letter written in the page
is a real RFC 5322 message put in the mailbox; a letter the desk sends is
kept with its text and attachments for the page to show.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import format_datetime, formataddr, getaddresses, make_msgid, parseaddr

from mail.channel import MailPorts
from mail.imap import Envelope
from workflows.identity import mailbox_of

# How often a waiting poller looks whether it was told to stop.
_STOP_CHECK_SECONDS = 0.2


class MemoryMailbox:
    """A mailbox folder in memory, read by the desk's real poller (see :class:`mail.imap.Mailbox`).

    It offers IDLE: the poller waits in :meth:`wait_for_mail` and a letter put
    in by :meth:`put` wakes it at once. Every method is safe from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._letters: dict[int, bytes] = {}
        self._processed: set[int] = set()
        self._arrived = threading.Event()
        self._uids = itertools.count(1)
        self._open = False

    def put(self, raw: bytes) -> int:
        """A letter arrives; returns its UID."""
        with self._lock:
            uid = next(self._uids)
            self._letters[uid] = raw
        self._arrived.set()
        return uid

    def processed(self, uid: int) -> bool:
        with self._lock:
            return uid in self._processed

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def supports_idle(self) -> bool:
        return True

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def uidvalidity(self) -> int:
        return 1

    def new_uids(self, after: int) -> list[int]:
        with self._lock:
            return sorted(uid for uid in self._letters if uid > after)

    def envelopes(self, uids: Sequence[int]) -> dict[int, Envelope]:
        found: dict[int, Envelope] = {}
        for uid, raw in self.fetch_many(uids).items():
            header = BytesHeaderParser().parsebytes(raw)
            addresses = getaddresses([str(v) for v in header.get_all("From", [])])
            sender = next((mailbox_of(a) for _, a in addresses if "@" in a), "")
            found[uid] = Envelope(sender, len(raw))
        return found

    def fetch_many(self, uids: Sequence[int]) -> dict[int, bytes]:
        with self._lock:
            return {uid: self._letters[uid] for uid in uids if uid in self._letters}

    def headers_many(self, uids: Sequence[int]) -> dict[int, bytes]:
        return {uid: raw.split(b"\r\n\r\n", 1)[0] for uid, raw in self.fetch_many(uids).items()}

    def mark_processed(self, uids: Sequence[int]) -> None:
        with self._lock:
            self._processed.update(uids)

    def wait_for_mail(self, seconds: float, stop: threading.Event) -> bool:
        """Until a letter arrives (True), ``seconds`` pass or ``stop`` is set (False)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            if self._arrived.wait(_STOP_CHECK_SECONDS):
                self._arrived.clear()
                return True
        return False


@dataclass(frozen=True)
class Attachment:
    """A file attached to a letter the desk sent; the page offers it for download."""

    key: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Letter:
    """A letter as the page shows it: written in the page (``in``) or sent by the desk (``out``)."""

    number: int
    direction: str  # "in": to the desk; "out": from the desk
    sender: str
    to: str
    subject: str
    text: str
    at: datetime
    message_id: str
    attachments: tuple[Attachment, ...] = field(default=())


class Mailroom:
    """The page's mail: letters written to the desk and the desk's letters, in order."""

    def __init__(self, desk_address: str, *, on_change: Callable[[], None] | None = None) -> None:
        self.desk_address = desk_address
        self.mailbox = MemoryMailbox()
        self.letters: list[Letter] = []
        self.attachments: dict[str, Attachment] = {}
        self._numbers = itertools.count(1)
        self.on_change = on_change

    @property
    def ports(self) -> MailPorts:
        """What the desk's mail channel reads from and sends through."""
        return MailPorts(mailbox=self.mailbox, transport=self.take)

    def write(
        self, sender: str, subject: str, body: str, *, in_reply_to: str | None = None
    ) -> Letter:
        """A person's letter to the desk, put in the mailbox the desk reads."""
        name, address = parseaddr(sender)
        message = EmailMessage()
        message["From"] = formataddr((name, address)) if name else address
        message["To"] = self.desk_address
        message["Subject"] = subject
        now = datetime.now(UTC)
        message["Date"] = format_datetime(now)
        domain = address.rpartition("@")[2] or "example.kz"
        message["Message-ID"] = make_msgid(domain=domain)
        if in_reply_to:
            message["In-Reply-To"] = message["References"] = in_reply_to
        message.set_content(body)
        letter = Letter(
            number=next(self._numbers),
            direction="in",
            sender=str(message["From"]),
            to=self.desk_address,
            subject=subject,
            text=body,
            at=now,
            message_id=str(message["Message-ID"]),
        )
        self.letters.append(letter)
        self.mailbox.put(message.as_bytes(policy=default_policy.clone(linesep="\r\n")))
        self._changed()
        return letter

    async def take(self, message: EmailMessage) -> None:
        """The desk sends a letter (its SMTP server's place): kept for the page."""
        number = next(self._numbers)
        body = message.get_body(("plain",))
        text = body.get_content() if isinstance(body, EmailMessage) else ""
        attachments = []
        for index, part in enumerate(message.iter_attachments()):
            assert isinstance(part, EmailMessage)
            data = part.get_payload(decode=True)
            attachment = Attachment(
                key=f"{number}-{index}",
                filename=part.get_filename() or f"attachment-{index}",
                content_type=part.get_content_type(),
                data=data if isinstance(data, bytes) else b"",
            )
            self.attachments[attachment.key] = attachment
            attachments.append(attachment)
        self.letters.append(
            Letter(
                number=number,
                direction="out",
                sender=str(message["From"]),
                to=str(message["To"]),
                subject=str(message["Subject"]),
                text=text,
                at=datetime.now(UTC),
                message_id=str(message["Message-ID"]),
                attachments=tuple(attachments),
            )
        )
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
