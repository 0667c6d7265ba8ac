"""Which parts of ``aina-dsr run`` work, and which keep crashing: what ``/healthz`` answers.

A part is a component of the process (telegram, mail, scheduler, metrics) or a
loop inside one (the mail poller and the mail sender, the Telegram outbox),
each under a supervisor that starts it again when it crashes. One crash is
weather: a server restarted, a connection dropped. A part that crashed
``limit`` times within ``window`` seconds does not work, and a desk with such
a part is not healthy, however well its database answers.

The components' own supervisor (:func:`aina_dsr.runtime.serve`) reports
starts, crashes and stops here. The loops inside a channel are supervised by
the channel, which says so only in its log: :class:`CrashLog` reads those
lines (the channel's logger and its message, as :data:`CrashLine` names them).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from workflows.privacy.masking import mask_text

CRASH_LIMIT = 3
CRASH_WINDOW = 300.0


@dataclass(frozen=True)
class CrashLine:
    """A supervisor's log line saying that a part crashed.

    ``part`` is the part's name, or ``None`` when the line's first argument
    names it (``"%s crashed; starting it again in %g s"``).
    """

    logger: str
    message: str
    part: str | None = None


@dataclass
class _Part:
    parent: str | None
    running: bool = False
    crashes: deque[float] = field(default_factory=deque)
    last_error: str | None = None


class PartHealth:
    """Each part's state, from its starts, crashes and stops."""

    def __init__(
        self,
        *,
        limit: int = CRASH_LIMIT,
        window: float = CRASH_WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._monotonic = monotonic
        self._parts: dict[str, _Part] = {}

    def add(self, name: str, *, parent: str | None = None) -> None:
        """A part this process runs; a loop inside a component names it as ``parent``."""
        self._parts.setdefault(name, _Part(parent))

    def started(self, name: str) -> None:
        self._part(name).running = True

    def stopped(self, name: str) -> None:
        self._part(name).running = False

    def crashed(self, name: str, error: BaseException | None) -> None:
        part = self._part(name)
        if part.parent is None:
            part.running = False
        part.crashes.append(self._monotonic())
        if error is not None:
            # Shown on /healthz: one line, short, and masked like the log.
            text = " ".join(f"{type(error).__name__}: {error}".split())
            part.last_error = mask_text(text if len(text) <= 200 else text[:197] + "...")
        self._forget_old(part)

    def states(self) -> dict[str, dict[str, Any]]:
        """``name -> {"state", "crashes" (within the window), "last_error" (if any)}``."""
        found: dict[str, dict[str, Any]] = {}
        for name, part in self._parts.items():
            self._forget_old(part)
            entry: dict[str, Any] = {"state": self._state(part), "crashes": len(part.crashes)}
            if part.crashes and part.last_error:
                entry["last_error"] = part.last_error
            found[name] = entry
        return found

    def problems(self) -> list[str]:
        """Why the desk is unhealthy: each part that keeps crashing, in words."""
        minutes = f"{self.window / 60:g} min"
        return [
            f"{name} crashed {entry['crashes']} times within {minutes}"
            + (f" ({entry['last_error']})" if "last_error" in entry else "")
            for name, entry in self.states().items()
            if entry["state"] == "crashing"
        ]

    def _state(self, part: _Part) -> str:
        if len(part.crashes) >= self.limit:
            return "crashing"
        if part.parent is not None:
            parent = self._parts.get(part.parent)
            return "running" if parent is None or parent.running else "stopped"
        if part.running:
            return "running"
        return "restarting" if part.crashes else "stopped"

    def _part(self, name: str) -> _Part:
        self.add(name)
        return self._parts[name]

    def _forget_old(self, part: _Part) -> None:
        horizon = self._monotonic() - self.window
        while part.crashes and part.crashes[0] <= horizon:
            part.crashes.popleft()


class CrashLog(logging.Handler):
    """Counts the crashes a channel's own supervisor reports only in its log."""

    def __init__(self, health: PartHealth, lines: Sequence[CrashLine]) -> None:
        super().__init__(logging.ERROR)
        self._health = health
        self._lines = {(line.logger, line.message): line for line in lines}

    def emit(self, record: logging.LogRecord) -> None:
        line = self._lines.get((record.name, str(record.msg)))
        if line is None:
            return
        part = line.part
        if part is None:
            args = record.args if isinstance(record.args, tuple) else ()
            part = str(args[0]) if args else None
        if part is None:
            return
        error = record.exc_info[1] if record.exc_info else None
        self._health.crashed(part, error)


@contextmanager
def crash_log(health: PartHealth, lines: Sequence[CrashLine]) -> Iterator[None]:
    """Read ``lines`` off their loggers while the block runs."""
    handler = CrashLog(health, lines)
    loggers = {logging.getLogger(line.logger) for line in lines}
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.addHandler(handler)
        if not logger.isEnabledFor(logging.ERROR):
            # DSR_LOG_LEVEL=CRITICAL would drop the line before any handler saw the crash.
            logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.setLevel(levels[logger])
