"""Requests filed against the customer directory of tests/data, and directories that fail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.directory.customer_directory import Flags
from workflows.directory.sql_directory import SqlDirectory
from workflows.directory.store import CustomerRecord
from workflows.directory.suppressions import Suppression
from workflows.persistence.tables import OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

PHONE = "+77011234567"  # C-1001 in tests/data/customers.csv
CUSTOMER = "C-1001"
ALICE = 700100  # the person who files, in the bot


async def filed(service: RequestService, kind: str, **fields: str) -> str:
    """A request of ``kind`` Alice filed in the bot, verified by her contact (C-1001's phone)."""
    view = await service.open_request(
        kind=kind, channel="telegram", language="kk", telegram_user_id=ALICE, fields=fields
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=ALICE, contact_user_id=ALICE, phone=PHONE
    )
    return view.reference


async def notices(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, template: str
) -> list[dict[str, Any]]:
    """The params of every outbox item of ``template``, decrypted."""
    async with sessions() as session:
        rows = (
            await session.scalars(select(OutboxItem).where(OutboxItem.template == template))
        ).all()
    return [vault.decrypt_json(row.params_enc) for row in rows]


class MemoryCrm:
    """A company's own CRM behind the CustomerDirectory protocol (the documented example)."""

    def __init__(self, records: Mapping[str, CustomerRecord]) -> None:
        self.records = dict(records)
        self.flags: dict[str, Flags] = {}

    async def lookup(
        self,
        *,
        customer_id: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        iin: str | None = None,
    ) -> CustomerRecord | None:
        for record in self.records.values():
            if customer_id in (record.id,) or (phone and record.phone == phone):
                return record
        return None

    async def erase(self, customer_id: str, fields: Sequence[str]) -> list[str]:
        record = self.records[customer_id]
        erased = [f for f in fields if getattr(record, f) is not None]
        self.records[customer_id] = replace(record, **dict.fromkeys(fields))
        return erased

    async def update(self, customer_id: str, changes: Mapping[str, str]) -> list[str]:
        self.records[customer_id] = replace(self.records[customer_id], **changes)
        return list(changes)

    async def set_flags(self, customer_id: str, flags: Flags) -> None:
        self.flags[customer_id] = flags

    async def suppressions(self) -> list[Suppression]:
        return []


class DownCrm(MemoryCrm):
    """A CRM that answers lookups but times out on every change."""

    async def set_flags(self, customer_id: str, flags: Flags) -> None:
        raise TimeoutError(f"CRM write timed out for {PHONE}")


class FlakyDirectory(SqlDirectory):
    """The desk's directory while its database refuses writes, until it is back."""

    down = True

    async def set_flags(self, customer_id: str, flags: Flags) -> None:
        if self.down:
            raise ConnectionError("directory unreachable")
        await super().set_flags(customer_id, flags)
