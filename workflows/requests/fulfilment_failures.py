"""An approved request whose work failed is said, not lost: staff hear why, and can try again.

Approval is committed before the work is done, since the work reaches past this
desk's transaction (a CRM, a generated report, a notice with files). A failure
on the way leaves the request approved, where the card's Complete tries the
work again. Without a word, nobody would know it waits: so the failure is an
audit event (``fulfilment_failed``, by the staff member who tried, with the
error's type) and an alert in the staff group naming the request and the
reason (:class:`~workflows.fulfilment.work.Fulfilment` calls this).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflows.requests.records import Records
from workflows.requests.states import Status
from workflows.snapshots import Actor

FULFILMENT_FAILED = "fulfilment_failed"


class FulfilmentFailures(Records):
    """The request service's use-case of an approved request's work failing (a mixin)."""

    async def fulfilment_failed(
        self,
        reference: str,
        staff: Actor,
        *,
        reason: str,
        details: Mapping[str, Any],
    ) -> bool:
        """Record that the work of an approved request failed, and alert the staff group.

        ``reason`` is what staff read (no personal data in clear); ``details``
        go to the audit event, which is kept for good. Returns ``False`` and
        records nothing when the request is no longer approved (another staff
        member completed it meanwhile): there is nothing left to try again.
        """
        async with self._unit() as session:
            request = await self._load(session, reference)
            if request.status != Status.APPROVED.value:
                return False
            event = await self._audit(
                session, request, staff, FULFILMENT_FAILED, request.status, None, dict(details)
            )
            await self._to_staff(
                session, request, event, "staff_fulfilment_failed", {"reason": reason}
            )
            return True
