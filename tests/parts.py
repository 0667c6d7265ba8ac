"""Stand-in parts for ``serve``: one that works until stopped, one that crashes first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Worker:
    """Works until stopped, counting its starts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.starts = 0
        self.running = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.starts += 1
        self.running.set()
        await stop.wait()


class Crasher:
    """Crashes on its first ``crashes`` starts, then works until stopped."""

    def __init__(self, crashes: int) -> None:
        self.name = "crasher"
        self.crashes = crashes
        self.starts = 0
        self.steady = asyncio.Event()
        self.crashed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.starts += 1
        if self.starts <= self.crashes:
            self.crashed.set()
            raise RuntimeError(f"crash number {self.starts}")
        self.steady.set()
        await stop.wait()


def recording_sleep() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    """A sleep that returns at once and remembers how long it was asked to wait."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    return asked, sleep
