"""One IMAP connection to the desk's mailbox, driven from the poller's worker thread.

imap-tools is synchronous and its connection is not thread-safe, so every
method here runs in the one thread that owns the connection. Letters are
fetched with ``BODY.PEEK`` (never marked \\Seen), then flagged with
``PROCESSED_KEYWORD`` (or moved to the processed folder); nothing is deleted
or expunged.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, Protocol

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.imap_utf7 import utf7_encode

from mail.settings import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_LETTER, Security
from workflows.identity import mailbox_of

log = logging.getLogger(__name__)

PROCESSED_KEYWORD = "$AinaDeskProcessed"
# Of a letter too large to fetch, this much of its header at most (a partial FETCH).
_HEADER_BYTES = 256 * 1024


@dataclass(frozen=True)
class Envelope:
    """What is read of a new letter before it is fetched: whose it is, and how big."""

    sender: str  # the From address's mailbox (see workflows.identity.mailbox_of); "" if none
    size: int  # RFC822.SIZE, bytes


@dataclass(frozen=True)
class ImapSettings:
    """Where and how to read mail."""

    host: str
    port: int
    username: str
    password: str
    security: Security = "ssl"
    folder: str = "INBOX"
    processed_folder: str | None = None
    poll_seconds: float = 60.0
    timeout: float = 30.0
    # IDLE is re-issued at least this often (RFC 2177 asks for under 29 minutes).
    idle_seconds: float = 300.0
    ssl_context: ssl.SSLContext | None = None
    # A chunk holds at most this many bytes of letters (a bigger letter goes alone) ...
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    # ... and a letter over this is never fetched whole (its header only).
    max_letter_bytes: int = DEFAULT_MAX_LETTER
    # At most this many new UIDs are taken in one poll; the next poll takes the rest at once.
    max_batch: int = 500


class Mailbox(Protocol):
    """What the poller asks of a mailbox, from its worker thread.

    :class:`ImapConnection` is the real one; ``aina-dsr demo`` plugs in an
    in-memory one (:mod:`aina_dsr.demo.mailroom`), so that everything after the
    fetch (parsing, classification, trust checks, the outbox) runs as it does.
    """

    @property
    def is_open(self) -> bool: ...

    @property
    def supports_idle(self) -> bool: ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def uidvalidity(self) -> int: ...

    def new_uids(self, after: int) -> list[int]: ...

    def envelopes(self, uids: Sequence[int]) -> dict[int, Envelope]: ...

    def fetch_many(self, uids: Sequence[int]) -> dict[int, bytes]: ...

    def headers_many(self, uids: Sequence[int]) -> dict[int, bytes]: ...

    def mark_processed(self, uids: Sequence[int]) -> None: ...

    def wait_for_mail(self, seconds: float, stop: threading.Event) -> bool: ...


class ImapConnection:
    """One logged-in IMAP connection; every method runs in the poller's worker thread."""

    def __init__(self, settings: ImapSettings) -> None:
        self._settings = settings
        self._box: Any = None
        self.capabilities: frozenset[str] = frozenset()

    def open(self) -> None:
        s = self._settings
        box: Any
        # imaplib, given no context, makes an *unverified* one (ssl._create_stdlib_context):
        # any certificate for any name would do. Without a context of our own, verify
        # against the system's trust store and check the host name.
        context = s.ssl_context or ssl.create_default_context()
        if s.security == "ssl":
            box = MailBox(s.host, s.port, timeout=s.timeout, ssl_context=context)
        elif s.security == "starttls":
            box = MailBoxStartTls(s.host, s.port, timeout=s.timeout, ssl_context=context)
        else:
            box = MailBoxUnencrypted(s.host, s.port, timeout=s.timeout)
        box.login(s.username, s.password, initial_folder=None)
        self._box = box
        _typ, data = box.client.capability()
        words = b" ".join(d for d in data if isinstance(d, bytes)).decode("ascii", "replace")
        self.capabilities = frozenset(words.upper().split())
        if s.processed_folder and not box.folder.exists(s.processed_folder):
            box.folder.create(s.processed_folder)
        box.folder.set(s.folder)

    def close(self) -> None:
        box, self._box = self._box, None
        if box is None:
            return
        try:
            box.logout()
        except Exception:  # the connection may be gone already
            try:
                box.client.shutdown()
            except Exception:
                log.debug("IMAP connection already closed")

    @property
    def is_open(self) -> bool:
        return self._box is not None

    def uidvalidity(self) -> int:
        return int(self._box.folder.status(self._settings.folder, ["UIDVALIDITY"])["UIDVALIDITY"])

    def new_uids(self, after: int) -> list[int]:
        # A NOOP first: Dovecot shows letters appended by other sessions after a sync.
        self._box.client.noop()
        self._take_announcements()  # the search below finds what was announced so far
        # "UID n:*" always matches the last message, even one below n: filter it out.
        found = self._box.uids(f"UID {after + 1}:*")
        return sorted(uid for uid in (int(u) for u in found) if uid > after)[
            : self._settings.max_batch
        ]

    def envelopes(self, uids: Sequence[int]) -> dict[int, Envelope]:
        """The sender's mailbox and the size of each UID, in one FETCH."""
        if not uids:
            return {}
        found: dict[int, Envelope] = {}
        wanted = "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM)])"
        for uid, header, around in self._fetch(uids, wanted, "the senders and sizes"):
            size = re.search(rb"RFC822\.SIZE (\d+)", around)
            found[uid] = Envelope(_sender_key(header), int(size.group(1)) if size else 0)
        return found

    def fetch_many(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The raw letters of ``uids`` in one FETCH; a UID gone meanwhile is left out."""
        if not uids:
            return {}
        return {uid: raw for uid, raw, _ in self._fetch(uids, "(UID BODY.PEEK[])", "letters")}

    def headers_many(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The headers alone (at most ``_HEADER_BYTES`` of each) of ``uids``, in one FETCH."""
        if not uids:
            return {}
        wanted = f"(UID BODY.PEEK[HEADER]<0.{_HEADER_BYTES}>)"
        return {uid: head for uid, head, _ in self._fetch(uids, wanted, "headers")}

    def _fetch(self, uids: Sequence[int], wanted: str, what: str) -> list[tuple[int, bytes, bytes]]:
        """``(uid, literal, the response's other words)`` of one UID FETCH with one literal."""
        typ, data = self._box.client.uid("FETCH", uid_set(uids), wanted)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"FETCH of {len(uids)} {what} failed")
        found: list[tuple[int, bytes, bytes]] = []
        for index, item in enumerate(data):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes)):
                continue
            following = data[index + 1] if index + 1 < len(data) else b""
            # A server may name the UID (or the size) after the literal instead of before.
            around = item[0] + b" " + (following if isinstance(following, bytes) else b"")
            match = re.search(rb"UID (\d+)", around)
            if match is not None:
                found.append((int(match.group(1)), item[1], around))
        return found

    def mark_processed(self, uids: Sequence[int]) -> None:
        if not uids:
            return
        client = self._box.client
        wanted = uid_set(uids)
        # STORE without imap-tools' flag(), which would EXPUNGE: we never delete anything.
        typ, _ = client.uid("STORE", wanted, "+FLAGS", f"({PROCESSED_KEYWORD})")
        if typ != "OK":
            log.warning("could not flag uids %s as processed", wanted)
        target = self._settings.processed_folder
        if target and "MOVE" in self.capabilities:
            typ, _ = client.uid("MOVE", wanted, _quoted(target))
            if typ != "OK":
                log.warning("could not move uids %s to the processed folder", wanted)
        elif target:
            # Without MOVE, a copy is left behind rather than deleting the original.
            client.uid("COPY", wanted, _quoted(target))

    def _take_announcements(self) -> bool:
        """Whether the server announced new mail (EXISTS, RECENT) since last asked."""
        responses = self._box.client.untagged_responses
        exists, recent = responses.pop("EXISTS", None), responses.pop("RECENT", None)
        return bool(exists or recent)

    def wait_for_mail(self, seconds: float, stop: threading.Event) -> bool:
        """IDLE until the server reports something, ``seconds`` pass or ``stop`` is set."""
        # A letter that arrived while others were handled is announced in the reply to
        # our FETCH or STORE; imaplib files that away, and IDLE would not repeat it.
        if self._take_announcements():
            return True
        idle = self._box.idle
        idle.start()
        try:
            rounds = max(1, int(seconds))
            for _ in range(rounds):
                if stop.is_set():
                    return False
                responses = idle.poll(timeout=1.0)
                if any(re.search(rb"EXISTS|RECENT", r) for r in responses):
                    return True
            return False
        finally:
            idle.stop()

    @property
    def supports_idle(self) -> bool:
        return "IDLE" in self.capabilities


def uid_set(uids: Sequence[int]) -> str:
    """``1:3,7,9:10`` for 1, 2, 3, 7, 9, 10: short enough for a batch of any size."""
    ordered = sorted(set(uids))
    runs: list[str] = []
    start = previous = ordered[0]
    for uid in ordered[1:]:
        if uid != previous + 1:
            runs.append(f"{start}:{previous}" if previous != start else str(start))
            start = uid
        previous = uid
    runs.append(f"{start}:{previous}" if previous != start else str(start))
    return ",".join(runs)


def _sender_key(header: bytes) -> str:
    """The mailbox of the From address (plus-tags and case folded): one turn per mailbox."""
    message = BytesHeaderParser().parsebytes(header)
    addresses = getaddresses([str(value) for value in message.get_all("From", [])])
    return next((mailbox_of(address) for _, address in addresses if "@" in address), "")


def _quoted(folder: str) -> str:
    encoded = utf7_encode(folder).decode("ascii")
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'
