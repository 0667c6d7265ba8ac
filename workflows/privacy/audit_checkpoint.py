"""The audit chain's head written down outside the database: one line a checkpoint.

Each line is a JSON object: ``at`` (ISO 8601), ``events`` (how many events the
chain held), ``head_id`` and ``head`` (the id and hash of the last of them).
``aina-dsr audit verify`` reads every line: the chain must still hold, as its
``events``-th event, the one with that hash. A chain shorter than a
checkpoint, or with another event in its place, was cut (and perhaps grown
again) since; re-hashing cannot hide that, as the hash of the head commits to
every event before it. The scheduler's daily pass and ``aina-dsr audit verify
--checkpoint`` append to the file (``DSR_AUDIT_CHECKPOINT_FILE``): keep it, or
a copy, where whoever can write to the database cannot.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# A checkpoint line is about 150 bytes: the last one is within this many of the end.
_TAIL = 4096


class CheckpointError(ValueError):
    """A line of the checkpoint file is not a checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """The chain's length and its last event's hash at an instant."""

    at: datetime
    events: int
    head: str
    head_id: int | None = None

    def line(self) -> str:
        return json.dumps(
            {
                "at": self.at.isoformat(),
                "events": self.events,
                "head_id": self.head_id,
                "head": self.head,
            }
        )


def _parse(text: str, number: int) -> Checkpoint:
    try:
        data: Any = json.loads(text)
        at = datetime.fromisoformat(data["at"])
        events = data["events"]
        head = data["head"]
        head_id = data.get("head_id")
        if at.tzinfo is None or not isinstance(events, int) or events < 0:
            raise ValueError("no offset, or a negative count")
        if not (isinstance(head, str) and len(head) == 64):
            raise ValueError("not a hash")
        if head_id is not None and not isinstance(head_id, int):
            raise ValueError("not an id")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"line {number} is not a checkpoint ({exc})") from exc
    return Checkpoint(at, events, head, head_id)


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Every checkpoint in the file, oldest first; none when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [
        _parse(line, number)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def last_checkpoint(path: Path) -> Checkpoint | None:
    """The newest checkpoint, read from the file's end (the file grows a line a day)."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - _TAIL))
            tail = file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    lines = [line for line in tail.splitlines() if line.strip()]
    return _parse(lines[-1], 0) if lines else None


def append_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Add a checkpoint as the file's last line, on disk before returning."""
    with path.open("a", encoding="utf-8") as file:
        file.write(checkpoint.line() + "\n")
        file.flush()
        os.fsync(file.fileno())
