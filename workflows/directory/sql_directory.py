"""The desk's own customer directory: the SQL tables ``aina-dsr customers import`` fills.

It implements :class:`~workflows.directory.customer_directory.CustomerDirectory`:
lookups by customer id or any identifier, erasing fields (remembered, so no
later import writes them back), setting values already checked by the field
rules, and the flags a withdrawal, an unsubscription or a block sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.directory.customer_directory import DIRECTORY_FIELDS, DirectoryError, Flags
from workflows.directory.store import CustomerRecord, customer_record
from workflows.directory.suppressions import Suppression
from workflows.identity import normalize_email, normalize_phone, validate_iin
from workflows.persistence.tables import Customer
from workflows.privacy.vault import Vault


class SqlDirectory:
    """The desk's own directory (``aina-dsr customers import`` fills it)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], vault: Vault, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock

    async def _row(self, session: AsyncSession, customer_id: str) -> Customer:
        row = await session.scalar(select(Customer).where(Customer.external_id == customer_id))
        if row is None:
            raise DirectoryError("the customer is not in the directory")
        return row

    async def lookup(
        self,
        *,
        customer_id: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        iin: str | None = None,
    ) -> CustomerRecord | None:
        conditions = []
        if customer_id is not None:
            conditions.append(Customer.external_id == customer_id)
        if phone is not None:
            index = self._vault.blind_index("phone", normalize_phone(phone))
            conditions.append(Customer.phone_index == index)
        if email is not None:
            index = self._vault.blind_index("email", normalize_email(email))
            conditions.append(Customer.email_index == index)
        if iin is not None:
            conditions.append(
                Customer.iin_index == self._vault.blind_index("iin", validate_iin(iin))
            )
        if not conditions:
            return None
        async with self._sessions() as session:
            row = await session.scalar(
                select(Customer).where(or_(*conditions)).order_by(Customer.id).limit(1)
            )
            return await customer_record(session, self._vault, row) if row is not None else None

    async def erase(self, customer_id: str, fields: Sequence[str]) -> list[str]:
        unknown = sorted(set(fields) - DIRECTORY_FIELDS)
        if unknown:
            raise DirectoryError(f"unknown fields: {', '.join(unknown)}")
        now = self._clock.now()
        erased: list[str] = []
        async with self._sessions.begin() as session:
            row = await self._row(session, customer_id)
            for name in fields:
                if name == "language":
                    if row.language is not None:
                        erased.append(name)
                    row.language = None
                    continue
                if getattr(row, f"{name}_enc") is not None:
                    erased.append(name)
                setattr(row, f"{name}_enc", None)
                if name in ("phone", "email", "iin"):
                    setattr(row, f"{name}_index", None)
            row.erased_at = now
            row.erased_fields = sorted(set(row.erased_fields or []) | set(fields))
            # The import's row digest was a keyed hash of the erased values too; the next
            # import stores one of what it may keep (workflows.directory.import_holds).
            row.source_digest = ""
            row.updated_at = now
        return erased

    async def update(self, customer_id: str, changes: Mapping[str, str]) -> list[str]:
        unknown = sorted(set(changes) - DIRECTORY_FIELDS)
        if unknown:
            raise DirectoryError(f"unknown fields: {', '.join(unknown)}")
        changed: list[str] = []
        async with self._sessions.begin() as session:
            row = await self._row(session, customer_id)
            for name, value in changes.items():
                if name == "language":
                    if row.language != value:
                        changed.append(name)
                    row.language = value
                    continue
                if self._vault.decrypt(getattr(row, f"{name}_enc")) != value:
                    changed.append(name)
                setattr(row, f"{name}_enc", self._vault.encrypt(value))
                if name in ("phone", "email", "iin"):
                    setattr(row, f"{name}_index", self._vault.blind_index(name, value))
            row.updated_at = self._clock.now()
        return changed

    async def set_flags(self, customer_id: str, flags: Flags) -> None:
        now = self._clock.now()
        async with self._sessions.begin() as session:
            row = await self._row(session, customer_id)
            if flags.marketing_stopped is not None:
                row.marketing_stopped_at = now if flags.marketing_stopped else None
                if flags.marketing_stopped:
                    row.marketing_consent = False
            if flags.processing_stopped is not None:
                row.processing_stopped_at = now if flags.processing_stopped else None
                row.processing_scope_enc = self._vault.encrypt(flags.processing_scope)
            if flags.blocked is not None:
                row.blocked_at = now if flags.blocked else None
            row.updated_at = now

    async def suppressions(self) -> list[Suppression]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Customer)
                .where(
                    or_(
                        Customer.marketing_stopped_at.is_not(None),
                        Customer.processing_stopped_at.is_not(None),
                        Customer.blocked_at.is_not(None),
                        Customer.erased_at.is_not(None),
                    )
                )
                .order_by(Customer.id)
            )
            return [
                Suppression(
                    customer_id=row.external_id,
                    marketing_stopped_at=row.marketing_stopped_at,
                    processing_stopped_at=row.processing_stopped_at,
                    processing_scope=self._vault.decrypt(row.processing_scope_enc),
                    blocked_at=row.blocked_at,
                    erased_at=row.erased_at,
                    erased_fields=tuple(row.erased_fields or ()),
                )
                for row in rows
            ]
