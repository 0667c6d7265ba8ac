"""How long-running parts wait, retry and lead (workflows/running.py), without servers."""

from __future__ import annotations

import asyncio

from workflows.running import Backoff, backoff, lead, wait_or_stop


async def test_a_wait_ends_at_once_when_stop_or_wake_is_set_and_says_which() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, wake.set)
    assert await asyncio.wait_for(wait_or_stop(stop, 60, wake=wake), 5) is False

    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await asyncio.wait_for(wait_or_stop(stop, 60), 5) is True
    assert await wait_or_stop(stop, 60) is True  # already set: no wait at all


async def test_a_wait_lasts_its_time_by_the_sleep_it_is_given() -> None:
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    assert await asyncio.wait_for(wait_or_stop(asyncio.Event(), 3600, sleep=sleep), 5) is False
    assert asked == [3600]


def test_pauses_double_up_to_the_cap_and_start_again_after_a_success() -> None:
    pauses = Backoff(1, 60)
    assert [pauses.next() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    pauses.reset()
    assert pauses.delay == 1
    assert [backoff(n) for n in (1, 2, 3)] == [5, 10, 20]


def test_a_long_failing_loop_stays_at_the_cap() -> None:
    pauses = Backoff(1, 60)
    for _ in range(5000):  # days of a crash loop: the doubling must not overflow
        pauses.next()
    assert pauses.next() == 60


class Lock:
    def __init__(self) -> None:
        self.held = False
        self.acquired = self.released = 0

    async def acquire(self) -> bool:
        self.held = True
        self.acquired += 1
        return True

    async def alive(self) -> bool:
        return self.held

    async def release(self) -> None:
        self.held = False
        self.released += 1


async def test_the_leader_steps_down_when_its_lock_is_lost_and_leads_again() -> None:
    stop, lock, terms = asyncio.Event(), Lock(), 0

    async def work(step_down: asyncio.Event) -> None:
        nonlocal terms
        terms += 1
        if terms == 1:
            lock.held = False  # the lock's connection broke
        elif terms == 2:
            stop.set()
        await step_down.wait()

    await asyncio.wait_for(
        lead(lock, stop, work, name="test", retry_seconds=0.01, check_seconds=0.01), 5
    )
    assert terms == 2
    assert (lock.acquired, lock.released) == (2, 2)
