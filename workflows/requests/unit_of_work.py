"""A use case's transaction: all of it commits or none; a lost race is a ConcurrentChange."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from workflows.errors import ConcurrentChange


class UnitOfWork:
    """A transaction that turns a lost optimistic-lock race into :class:`ConcurrentChange`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> AsyncSession:
        self._session = self._sessions()
        await self._session.begin()
        return self._session

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._session is not None
        session = self._session
        try:
            if exc_type is None:
                try:
                    await session.commit()
                except StaleDataError as error:
                    raise ConcurrentChange("the request changed meanwhile; try again") from error
            else:
                await session.rollback()
        finally:
            await session.close()
        if exc_type is not None and issubclass(exc_type, StaleDataError):
            raise ConcurrentChange("the request changed meanwhile; try again") from exc
