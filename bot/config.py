"""What the bot's handlers need to know besides the core: limits, staff, the wake-up call."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.update_cache import AfterDialogWrites
from workflows.i18n import DeskInfo


@dataclass
class BotConfig:
    staff_chat_id: int | None
    staff_user_ids: frozenset[int]
    staff_language: str = "ru"
    info: DeskInfo = field(default_factory=DeskInfo)
    max_text: int = 2000
    max_file_mb: int = 10
    max_files: int = 5
    # Messages and button presses one chat may send a minute (bot.throttle); staff are exempt.
    messages_per_minute: int = 20
    # Set after every change, so the outbox loop delivers at once instead of at its next tick
    # (within an update, once the update's dialog writes are committed).
    outbox_wake: asyncio.Event = field(default_factory=AfterDialogWrites)

    def is_staff(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.staff_user_ids
