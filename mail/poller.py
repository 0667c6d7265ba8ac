"""The IMAP poller: new letters from one folder, each handled once, none lost.

imap-tools is synchronous and its connection is not thread-safe, so one
connection lives in one worker thread (a single-thread executor) and the
event loop reaches it only through that thread. The poller keeps
UIDVALIDITY and the last UID it finished in ``mail_cursor``; a letter is
fetched with ``BODY.PEEK`` (never marked \\Seen), handled and committed, and
only then flagged (or moved to the processed folder). Nothing is deleted or
expunged. When UIDVALIDITY changes, the folder is read again from the start
and the intake's dedupe, not the old UID, decides what is new.

Letters are taken in turns by sender (the From headers and sizes of the new
UIDs are read first, in one FETCH): one mailbox that floods the mailbox with
hundreds of letters, under one address or many plus-tagged ones, gets one
turn in each round like everyone else, so the others' requests are opened in
the first batch. The cursor then moves only over the UIDs that are all done,
so a batch cut short loses nothing.

Letters are fetched, handed to the intake and flagged a chunk at a time: one
FETCH, one intake batch (one transaction), one cursor move and one STORE per
chunk. A chunk holds at most ``_CHUNK`` letters and ``chunk_bytes`` of them
(a single bigger letter goes alone), so what one transaction holds, decoded
and encrypted, stays bounded. A letter over ``max_letter_bytes`` is never
fetched whole: only its header (at most ``_HEADER_BYTES``) is, and the intake
records it as too large. A crash before the cursor moves replays at most that
chunk, and the intake's dedupe makes the replay harmless.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import re
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, Literal, TypeVar

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import MailboxLoginError
from imap_tools.imap_utf7 import utf7_encode
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.intake import DEFAULT_MAX_LETTER, MB, IntakeResult, MailIntake
from workflows.clock import Clock
from workflows.identity import mailbox_of
from workflows.metrics import mark_imap_polled
from workflows.persistence.tables import MailCursor
from workflows.running import Backoff, wait_or_stop

log = logging.getLogger(__name__)

Security = Literal["ssl", "starttls", "none"]
T = TypeVar("T")

PROCESSED_KEYWORD = "$AinaDeskProcessed"
_MAX_BATCH = 500
# Letters fetched, stored and flagged together (see the module docstring).
_CHUNK = 50
DEFAULT_CHUNK_BYTES = 20 * MB
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
        return sorted(uid for uid in (int(u) for u in found) if uid > after)[:_MAX_BATCH]

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
        typ, data = self._box.client.uid("FETCH", _uid_set(uids), wanted)
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
        wanted = _uid_set(uids)
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


def _uid_set(uids: Sequence[int]) -> str:
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


def chunks(
    order: Sequence[int], sizes: dict[int, int], *, count: int, max_bytes: int, max_letter: int
) -> list[list[int]]:
    """``order`` cut, in order, into runs of at most ``count`` letters and ``max_bytes``.

    A letter bigger than ``max_bytes`` goes alone; one over ``max_letter`` weighs
    nothing here, since only its header is fetched.
    """
    runs: list[list[int]] = []
    run: list[int] = []
    weight = 0
    for uid in order:
        size = sizes.get(uid, 0)
        size = 0 if size > max_letter else size
        if run and (len(run) >= count or weight + size > max_bytes):
            runs.append(run)
            run, weight = [], 0
        run.append(uid)
        weight += size
    if run:
        runs.append(run)
    return runs


def fair_order(uids: Sequence[int], senders: dict[int, str]) -> list[int]:
    """Round-robin over senders: each sender's letters keep their order, one per sender a turn."""
    queues: OrderedDict[str, list[int]] = OrderedDict()
    for uid in sorted(uids):
        queues.setdefault(senders.get(uid, ""), []).append(uid)
    order: list[int] = []
    turn = 0
    while len(order) < len(uids):
        for queue in queues.values():
            if turn < len(queue):
                order.append(queue[turn])
        turn += 1
    return order


def _quoted(folder: str) -> str:
    encoded = utf7_encode(folder).decode("ascii")
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MailPoller:
    """Reads new letters and hands each to the intake; see the module docstring."""

    def __init__(
        self,
        settings: ImapSettings,
        intake: MailIntake,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        first_backoff: float = 1.0,
        max_backoff: float = 300.0,
        on_mail: Callable[[IntakeResult], None] | None = None,
    ) -> None:
        self._settings = settings
        self._intake = intake
        self._sessions = sessions
        self._clock = clock
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self.on_mail = on_mail
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap")
        self._connection = ImapConnection(settings)
        self._stop_thread = threading.Event()
        # UIDs handled beyond the cursor (a batch taken out of order and cut short): not again.
        self._done: set[tuple[int, int]] = set()
        self._passed: tuple[int, int] = (0, 0)  # (UIDVALIDITY, UID) the cursor was moved to
        # The cursor as last read or written here: a chunk that moves it nowhere writes nothing.
        self._moved: dict[tuple[str, int], int] = {}
        self.more_waiting = False  # the last poll took a full batch; there may be more

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    async def connect(self) -> None:
        if not self._connection.is_open:
            await self._in_thread(self._connection.open)

    async def close(self) -> None:
        await self._in_thread(self._connection.close)

    def shutdown(self) -> None:
        """Let the worker thread go; it finishes what it is doing (bounded by IDLE's poll)."""
        self._stop_thread.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def poll_once(self, *, limit: int | None = None) -> list[IntakeResult]:
        """Handle every letter after the cursor (at most ``limit``); returns the outcomes."""
        await self.connect()
        folder = self._settings.folder
        validity = await self._in_thread(self._connection.uidvalidity)
        last_uid = await self._cursor(folder, validity)
        found = await self._in_thread(self._connection.new_uids, last_uid)
        # A full batch may have left letters behind: run() reads again without waiting.
        self.more_waiting = len(found) >= _MAX_BATCH
        uids = [uid for uid in found if (validity, uid) not in self._done]
        envelopes = await self._in_thread(self._connection.envelopes, uids)
        sizes = {uid: envelope.size for uid, envelope in envelopes.items()}
        order = fair_order(uids, {uid: envelope.sender for uid, envelope in envelopes.items()})
        if limit is not None:
            order = order[:limit]
        results: list[IntakeResult] = []
        most = self._settings.max_letter_bytes
        for chunk in chunks(
            order, sizes, count=_CHUNK, max_bytes=self._settings.chunk_bytes, max_letter=most
        ):
            whole = [uid for uid in chunk if sizes.get(uid, 0) <= most]
            raws = await self._in_thread(self._connection.fetch_many, whole)
            too_large = [uid for uid in chunk if sizes.get(uid, 0) > most]
            if too_large:
                heads = await self._in_thread(self._connection.headers_many, too_large)
                raws.update(heads)
                log.warning("%d letters over %d bytes: their headers only", len(heads), most)
            letters = [(uid, raws[uid]) for uid in chunk if uid in raws]
            handled = await self._intake.handle_batch(
                letters,
                folder=folder,
                uidvalidity=validity,
                too_large={uid: sizes[uid] for uid in too_large if uid in raws},
            )
            results.extend(handled)
            self._done.update((validity, uid) for uid in chunk)
            # Only after the intake committed: a crash before this replays the chunk.
            await self._advance(folder, validity, self._all_done_up_to(validity, found))
            await self._in_thread(self._connection.mark_processed, [uid for uid, _ in letters])
            if self.on_mail is not None:
                for result in handled:
                    self.on_mail(result)
        mark_imap_polled(folder, self._clock.now())
        return results

    def _all_done_up_to(self, validity: int, uids: list[int]) -> int:
        """The highest UID of the batch below which every UID is handled (0: none yet)."""
        upto = self._passed[1] if self._passed[0] == validity else 0
        for uid in uids:  # ascending
            if uid <= upto:
                continue
            if (validity, uid) not in self._done:
                break
            upto = uid
        # What the cursor passes needs no remembering.
        self._passed = (validity, upto)
        self._done = {(v, u) for v, u in self._done if v == validity and u > upto}
        return upto

    async def _cursor(self, folder: str, validity: int) -> int:
        async with self._sessions.begin() as session:
            cursor = await session.scalar(select(MailCursor).where(MailCursor.folder == folder))
            now = self._clock.now()
            self._moved[(folder, validity)] = 0 if cursor is None else int(cursor.last_uid)
            if cursor is None:
                session.add(
                    MailCursor(folder=folder, uidvalidity=validity, last_uid=0, updated_at=now)
                )
                return 0
            if cursor.uidvalidity != validity:
                log.warning(
                    "UIDVALIDITY of %s changed (%s -> %s): reading the folder again",
                    folder,
                    cursor.uidvalidity,
                    validity,
                )
                cursor.uidvalidity, cursor.last_uid, cursor.updated_at = validity, 0, now
                self._moved[(folder, validity)] = 0
                return 0
            return int(cursor.last_uid)

    async def _advance(self, folder: str, validity: int, uid: int) -> None:
        if uid <= self._moved.get((folder, validity), 0):
            return  # nothing new below the first UID still to do
        async with self._sessions.begin() as session:
            await session.execute(
                update(MailCursor)
                .where(
                    MailCursor.folder == folder,
                    MailCursor.uidvalidity == validity,
                    MailCursor.last_uid < uid,
                )
                .values(last_uid=uid, updated_at=self._clock.now())
            )
        self._moved[(folder, validity)] = uid

    async def _wait(self, stop: asyncio.Event) -> None:
        """Until new mail may be there: IDLE where offered, else the poll interval."""
        if self._connection.supports_idle:
            seconds = min(self._settings.idle_seconds, self._settings.poll_seconds * 10, 1740)
            await self._in_thread(self._connection.wait_for_mail, seconds, self._stop_thread)
            return
        await wait_or_stop(stop, self._settings.poll_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; a lost connection is retried with backoff, never a crash loop."""
        pauses = Backoff(self._first_backoff, self._max_backoff)
        self._stop_thread.clear()
        watcher = asyncio.create_task(self._relay_stop(stop))
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                    pauses.reset()
                    if stop.is_set():
                        break
                    if not self.more_waiting:
                        await self._wait(stop)
                except (TimeoutError, OSError, imaplib.IMAP4.error, MailboxLoginError) as exc:
                    delay = pauses.next()
                    log.warning(
                        "IMAP %s:%s unavailable (%s); reconnecting in %.0f s",
                        self._settings.host,
                        self._settings.port,
                        type(exc).__name__,
                        delay,
                    )
                    await self._drop()
                    await wait_or_stop(stop, delay)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self._stop_thread.set()
            await self._drop()

    async def _drop(self) -> None:
        try:
            await self._in_thread(self._connection.close)
        except Exception:
            log.debug("closing the IMAP connection failed", exc_info=True)

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stop_thread.set()
