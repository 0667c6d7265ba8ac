"""The IMAP poller: new letters from one folder, each handled once, none lost.

imap-tools is synchronous and its connection is not thread-safe, so one
connection lives in one worker thread (a single-thread executor) and the
event loop reaches it only through that thread. The poller keeps
UIDVALIDITY and the last UID it finished in ``mail_cursor`` (see
:mod:`workflows.channel_state.mail_cursors`); a letter is fetched (see
:mod:`mail.imap`), handled and committed, and only then flagged (or moved to
the processed folder). When UIDVALIDITY changes, the folder is read again
from the start and the intake's dedupe, not the old UID, decides what is new.

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
fetched whole: only its header is, and the intake records it as too large.
A crash before the cursor moves replays at most that
chunk, and the intake's dedupe makes the replay harmless.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from imap_tools.errors import MailboxLoginError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.imap import ImapConnection, ImapSettings, Mailbox
from mail.intake import MailIntake
from mail.outcomes import IntakeResult
from workflows.channel_state.mail_cursors import MailCursors
from workflows.clock import Clock
from workflows.metrics import counted_round, mark_imap_polled
from workflows.running import Backoff, wait_or_stop

log = logging.getLogger(__name__)

T = TypeVar("T")

# Letters fetched, stored and flagged together (see the module docstring).
_CHUNK = 50


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
        connection: Mailbox | None = None,
    ) -> None:
        self._settings = settings
        self._intake = intake
        self._clock = clock
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self.on_mail = on_mail
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap")
        # The IMAP connection, unless another mailbox is plugged in (aina-dsr demo).
        self._connection: Mailbox = connection or ImapConnection(settings)
        self._stop_thread = threading.Event()
        # UIDs handled beyond the cursor (a batch taken out of order and cut short): not again.
        self._done: set[tuple[int, int]] = set()
        self._passed: tuple[int, int] = (0, 0)  # (UIDVALIDITY, UID) the cursor was moved to
        self.cursors = MailCursors(sessions, clock)
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
        # A round of the mailbox loop, as /metrics counts them ("imap INBOX").
        with counted_round(f"imap {self._settings.folder}"):
            return await self._poll(limit)

    async def _poll(self, limit: int | None) -> list[IntakeResult]:
        await self.connect()
        folder = self._settings.folder
        validity = await self._in_thread(self._connection.uidvalidity)
        last_uid = await self._start(folder, validity)
        found = await self._in_thread(self._connection.new_uids, last_uid)
        # A full batch may have left letters behind: run() reads again without waiting.
        self.more_waiting = len(found) >= self._settings.max_batch
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
            await self.cursors.advance(folder, validity, self._all_done_up_to(validity, found))
            await self._in_thread(self._connection.mark_processed, [uid for uid, _ in letters])
            if self.on_mail is not None:
                for result in handled:
                    self.on_mail(result)
        mark_imap_polled(folder, self._clock.now())
        return results

    async def _start(self, folder: str, validity: int) -> int:
        """The last UID finished in ``folder``; 0 when the folder is new or its UIDVALIDITY."""
        position = await self.cursors.start(folder, validity)
        if position.reset_from is not None:
            log.warning(
                "UIDVALIDITY of %s changed (%s -> %s): reading the folder again",
                folder,
                position.reset_from,
                validity,
            )
        return position.last_uid

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

    async def wait_for_mail(self, stop: asyncio.Event) -> None:
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
                        await self.wait_for_mail(stop)
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
