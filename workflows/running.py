"""How long-running parts wait, retry and lead: wait-or-stop, backoff and the leader loop.

Every loop of ``aina-dsr run`` (the scheduler, the mail poller and sender, the
Telegram outbox, the supervisor of the parts) runs until its ``stop`` event is
set and must not keep the process waiting when it is: it pauses with
:func:`wait_or_stop`. A try that failed is tried again after a pause that
doubles up to a cap (:func:`backoff`, :class:`Backoff`). Work that one process
of several does at a time (the scheduler, reading the mailbox) runs under
:func:`lead`: while this process holds the leader lock, checked every few
seconds, and again when it gets the lock back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workflows.deadlines.leader_lock import LeaderLock

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


async def wait_or_stop(
    stop: asyncio.Event,
    seconds: float,
    *,
    wake: asyncio.Event | None = None,
    sleep: Sleep | None = None,
) -> bool:
    """Wait ``seconds``, or less if ``stop`` (or ``wake``) is set meanwhile; whether ``stop`` is.

    ``sleep`` measures the wait instead of the event loop's timeout (a test's
    clock); nothing is left running once it returns.
    """
    waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    timeout: float | None = seconds
    if sleep is not None:
        waiters.append(asyncio.ensure_future(sleep(seconds)))
        timeout = None
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return stop.is_set()


def backoff(attempt: int, base: float = 5.0, cap: float = 3600.0) -> float:
    """Seconds to wait before the next try after ``attempt`` failed tries."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


class Backoff:
    """The pauses between the tries of one loop: ``first``, doubled after each failure up to
    ``maximum``, and ``first`` again after a :meth:`reset` (a success)."""

    def __init__(self, first: float, maximum: float) -> None:
        self.first = first
        self.maximum = maximum
        self._failed = 0

    @property
    def delay(self) -> float:
        """The pause :meth:`next` gives next."""
        return backoff(self._failed + 1, self.first, self.maximum)

    def next(self) -> float:
        """The pause before the next try after a failure; the one after it doubles."""
        delay = self.delay
        if delay < self.maximum:  # at the cap it stays; the count stops growing
            self._failed += 1
        return delay

    def reset(self) -> None:
        self._failed = 0


async def lead(
    lock: LeaderLock,
    stop: asyncio.Event,
    work: Callable[[asyncio.Event], Awaitable[None]],
    *,
    name: str,
    retry_seconds: float,
    check_seconds: float,
) -> None:
    """Run ``work`` whenever this process holds ``lock``, until ``stop`` is set.

    ``work(step_down)`` returns once ``step_down`` is set: when ``stop`` is, or
    when the lock, checked every ``check_seconds``, is found lost. The lock is
    then released and, unless stopping, taken again at once if it is free; a
    process that does not get it tries again every ``retry_seconds``.
    """
    while not stop.is_set():
        if not await lock.acquire():
            await wait_or_stop(stop, retry_seconds)
            continue
        try:
            await _while_held(lock, stop, work, name, check_seconds)
        finally:
            await lock.release()


async def _while_held(
    lock: LeaderLock,
    stop: asyncio.Event,
    work: Callable[[asyncio.Event], Awaitable[None]],
    name: str,
    check_seconds: float,
) -> None:
    step_down = asyncio.Event()
    watcher = asyncio.create_task(_watch(lock, stop, step_down, name, check_seconds))
    try:
        await work(step_down)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _watch(
    lock: LeaderLock, stop: asyncio.Event, step_down: asyncio.Event, name: str, seconds: float
) -> None:
    try:
        while not await wait_or_stop(stop, seconds):
            if not await lock.alive():
                log.warning("the %s lock is lost; another process may take over", name)
                return
    finally:
        step_down.set()
