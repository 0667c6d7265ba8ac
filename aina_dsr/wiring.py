"""Builds the core from the settings: engine, vault, calendar, clock, service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aina_dsr.preflight import database_ready, key_reads_stored_data
from aina_dsr.settings import Settings, encryption_keys_or_dev
from workflows.clock import Clock, SystemClock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.persistence.engines import make_engine, make_sessionmaker
from workflows.privacy.audit import sign_unkeyed_chain
from workflows.privacy.vault import Vault
from workflows.requests.limits import Limits
from workflows.requests.service import RequestService


@dataclass(frozen=True)
class Core:
    """The parts every channel and command shares, made once per process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    clock: Clock
    calendar: WorkingCalendar
    service: RequestService

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)


@asynccontextmanager
async def open_core(
    settings: Settings,
    *,
    clock: Clock | None = None,
    upgrade_sqlite: bool = True,
    check_key: bool = True,
) -> AsyncIterator[Core]:
    """Open the core for the length of a command or of the main job.

    The embedded SQLite database is brought up to date on the way in; a
    PostgreSQL database is migrated only by ``aina-dsr db upgrade``. The
    database must answer at this version's schema, and (unless ``check_key``
    is false: ``aina-dsr keys check`` counts every value itself) the stored
    data must read with the configured keys; otherwise a one-line failure is
    raised (:mod:`aina_dsr.preflight`).
    """
    # Several keys while a rotation runs: the first encrypts, every one decrypts.
    vault = Vault(*encryption_keys_or_dev(settings))
    calendar = WorkingCalendar.from_file(settings.calendar_file, settings.timezone)
    engine = make_engine(settings.database_url)
    try:
        await database_ready(engine, settings, upgrade_sqlite=upgrade_sqlite)
        if check_key:
            await key_reads_stored_data(engine, vault)
        # The sessions sign the audit events they write with the vault's audit key.
        sessions = make_sessionmaker(engine, vault)
        # Once, after the upgrade that keyed the chain: the older events are signed.
        await sign_unkeyed_chain(sessions, vault)
        clock = clock or SystemClock()
        service = RequestService(
            sessions,
            vault,
            clock,
            calendar,
            staff_user_ids=settings.staff_user_ids or None,
            four_eyes=settings.four_eyes_kinds,
            approvals_needed=settings.approvals_needed,
            limits=Limits(
                max_open_requests=settings.limit_open_requests,
                codes_per_hour=settings.limit_codes_per_hour,
            ),
        )
        yield Core(settings, engine, sessions, vault, clock, calendar, service)
    finally:
        await engine.dispose()
