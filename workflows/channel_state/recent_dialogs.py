"""A process that alone handles its bot's updates need not read again the dialogs it just wrote.

Under long polling Telegram gives a bot's updates to one poller, so nothing
but that process changes a dialog while it runs, save retention and key
rotation: it keeps the last dialogs in memory, and reads one again once it
has been remembered for a while, so such a change is seen within that time.
Replicas behind a webhook share their dialogs through Redis instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

Row = TypeVar("Row")


class RecentDialogs(Generic[Row]):
    """The last ``size`` dialogs written or read, each trusted for ``seconds``."""

    def __init__(self, size: int, seconds: float, monotonic: Callable[[], float]) -> None:
        self._size = size
        self._seconds = seconds
        self._monotonic = monotonic
        self._rows: OrderedDict[str, tuple[float, Row]] = OrderedDict()

    def recall(self, name: str) -> Row | None:
        """The dialog remembered under ``name``, or None when absent or too old."""
        entry = self._rows.get(name)
        if entry is None:
            return None
        if self._monotonic() - entry[0] > self._seconds:
            del self._rows[name]
            return None
        self._rows.move_to_end(name)
        return entry[1]

    def keep(self, name: str, row: Row) -> None:
        """Remembers ``row`` as the dialog under ``name``, forgetting the oldest past ``size``."""
        self._rows[name] = (self._monotonic(), row)
        self._rows.move_to_end(name)
        while len(self._rows) > self._size:
            self._rows.popitem(last=False)

    def forget(self, name: str) -> None:
        """What the database holds under ``name`` is unknown: it is read again next time."""
        self._rows.pop(name, None)
