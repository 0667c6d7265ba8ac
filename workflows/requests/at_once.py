"""Work the desk does itself, at once, for a verified request of an ``at_once`` kind.

Leaving mailings (``at_once`` in the kinds table) waits for no staff member
once the person has proved who they are. The composition gives the work (the
fulfilment's ``at_once``, :mod:`workflows.fulfilment.work`) through
:meth:`AtOnce.do_at_once`; each use case that makes such a request verified and
waiting for staff (a verification, a change of kind) hands it over after its
own commit. Only then: a request not verified is never done. The work failing
leaves the request as the work left it (verified, or approved with staff
alerted), so the person's proof stands and staff finish it by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from workflows.kinds import RequestKind
from workflows.requests.records import Records
from workflows.requests.states import Status
from workflows.snapshots import RequestView

log = logging.getLogger(__name__)

# What the desk does itself for a verified request of an ``at_once`` kind.
AtOnceWork = Callable[[RequestView], Awaitable[RequestView]]


class AtOnce(Records):
    """The request service's hand-over of ``at_once`` requests to their work (a mixin)."""

    _at_once_work: AtOnceWork | None = None

    def do_at_once(self, work: AtOnceWork) -> None:
        """Run ``work`` on each request of an ``at_once`` kind as soon as it is verified.

        The composition gives the fulfilment's ``at_once``
        (:mod:`workflows.fulfilment.work`); without it such a request waits
        for staff like any other.
        """
        self._at_once_work = work

    async def _then_at_once(self, view: RequestView) -> RequestView:
        """After the commit of a use case that left ``view`` so: the work of an ``at_once`` kind.

        Whatever the work raises is logged by type only and swallowed: the
        person did prove who they are, and a failed fulfilment has alerted
        staff already (the request stays for them to finish).
        """
        work = self._at_once_work
        if work is None or view.status != Status.VERIFIED.value:
            return view
        spec = self._kinds.get(RequestKind(view.kind))
        if spec is None or not spec.at_once:
            return view
        try:
            return await work(view)
        except Exception as exc:
            log.warning(
                "the at-once work of %s did not finish (%s); it waits for staff",
                view.reference,
                type(exc).__name__,
                extra={"reference": view.reference},
            )
        async with self._sessions() as session:  # as the work left it
            return await self._view(session, await self._load(session, view.reference))
