"""The request service: the one API both channels call, made of one mixin per use case.

Each public method is one unit of work: it opens a transaction, checks the
state machine, changes the request, writes the audit event and the outbox
messages the change causes, and commits them together. Where each lives:
reading in :mod:`~workflows.requests.queries`, filing and adding to a request in
:mod:`~workflows.requests.intake` (a letter by post in
:mod:`~workflows.requests.post`), proving who asks in
:mod:`~workflows.requests.verification`, staff's moves in
:mod:`~workflows.requests.staff_actions` and :mod:`~workflows.requests.approvals`,
and the steps they share in :mod:`~workflows.requests.records`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.kinds import DEFAULT_KINDS, KindSpec, RequestKind, four_eyes_kinds
from workflows.privacy.vault import Vault
from workflows.requests.approvals import Approvals
from workflows.requests.fulfilment_failures import FulfilmentFailures
from workflows.requests.holdings import Holdings
from workflows.requests.limits import Limits
from workflows.requests.post import PostIntake
from workflows.requests.queries import Queries
from workflows.requests.reachability import Reachability
from workflows.requests.staff_actions import KindChanges, StaffActions
from workflows.requests.verification import IdentityChecks


class RequestService(
    Queries,
    PostIntake,
    IdentityChecks,
    StaffActions,
    Approvals,
    KindChanges,
    Reachability,
    FulfilmentFailures,
    Holdings,
):
    """Opens, moves and reads requests; see the module docstring for where each use case is.

    A person coming back to the bot after blocking it is :class:`Reachability`;
    the work of an approved request failing, :class:`FulfilmentFailures`; what
    the desk holds about a person (for an access report), :class:`Holdings`.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        calendar: WorkingCalendar,
        *,
        kinds: Mapping[RequestKind, KindSpec] = DEFAULT_KINDS,
        staff_user_ids: frozenset[int] | None = None,
        randbelow: Callable[[int], int] = secrets.randbelow,
        four_eyes: frozenset[str] | None = None,  # None: as the kinds table says
        approvals_needed: int = 2,
        limits: Limits | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._four_eyes = frozenset(
            map(RequestKind, four_eyes_kinds(kinds) if four_eyes is None else four_eyes)
        )
        self._approvals_needed = max(1, approvals_needed)
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._calendar = calendar
        self._kinds = kinds
        self._staff_user_ids = staff_user_ids
        self._randbelow = randbelow

    @property
    def calendar(self) -> WorkingCalendar:
        return self._calendar

    @property
    def kinds(self) -> Mapping[RequestKind, KindSpec]:
        return self._kinds
