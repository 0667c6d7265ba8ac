"""Every action from every status: the allowed ones move, the others are refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import STAFF_ID
from workflows.errors import IllegalTransition
from workflows.requests.limits import Limits
from workflows.requests.service import RequestService
from workflows.requests.states import Action, Status
from workflows.snapshots import Actor

ALICE = 424242
PHONE = "+77011234567"
STAFF = Actor.staff(STAFF_ID, "Dana")
PERSON = Actor.person_telegram(ALICE)

# The design's request life, written out by hand: (from, action) -> to.
ALLOWED = {
    ("awaiting_verification", "verify"): "verified",
    ("awaiting_verification", "cancel"): "cancelled",
    ("awaiting_verification", "expire"): "expired",
    ("verified", "take"): "in_review",
    ("verified", "approve"): "approved",
    ("verified", "reject"): "rejected",
    ("verified", "ask_info"): "awaiting_info",
    ("verified", "cancel"): "cancelled",
    ("in_review", "take"): "in_review",
    ("in_review", "approve"): "approved",
    ("in_review", "reject"): "rejected",
    ("in_review", "ask_info"): "awaiting_info",
    ("in_review", "cancel"): "cancelled",
    ("awaiting_info", "take"): "awaiting_info",
    ("awaiting_info", "info_received"): "in_review",
    ("awaiting_info", "reject"): "rejected",
    ("awaiting_info", "cancel"): "cancelled",
    ("approved", "complete"): "completed",
}

Step = Callable[[RequestService, str], Awaitable[object]]

DO: dict[str, Step] = {
    "verify": lambda s, r: s.verify_by_contact(
        r, sender_user_id=ALICE, contact_user_id=ALICE, phone=PHONE
    ),
    "take": lambda s, r: s.take(r, STAFF),
    "approve": lambda s, r: s.approve(r, STAFF),
    "reject": lambda s, r: s.reject(r, STAFF, "not enough to identify the data"),
    "ask_info": lambda s, r: s.ask_info(r, STAFF, "which account?"),
    "info_received": lambda s, r: s.attach(r, PERSON, body="the account is my phone"),
    "complete": lambda s, r: s.complete(r, STAFF, answer="We send adverts with your consent."),
    "cancel": lambda s, r: s.cancel(r, PERSON),
    "expire": lambda s, r: s.expire(r),
}

# How to bring a fresh request to each status.
PATH: dict[str, list[str]] = {
    "awaiting_verification": [],
    "verified": ["verify"],
    "in_review": ["verify", "take"],
    "awaiting_info": ["verify", "take", "ask_info"],
    "approved": ["verify", "take", "approve"],
    "completed": ["verify", "take", "approve", "complete"],
    "rejected": ["verify", "reject"],
    "cancelled": ["cancel"],
    "expired": ["expire"],
}


def test_the_table_in_the_code_is_the_designs() -> None:
    from workflows.requests.states import TRANSITIONS

    assert {(f.value, a.value): t.value for (f, a), t in TRANSITIONS.items()} == ALLOWED
    assert set(PATH) == {s.value for s in Status}
    assert set(DO) == {a.value for a in Action}


@pytest.mark.parametrize("status", [s.value for s in Status])
async def test_every_action_from(service: RequestService, status: str) -> None:
    # One person files a request per action here; the per-person limit is not under test.
    service.limits = Limits(max_open_requests=len(Action) + 1)
    for action in (a.value for a in Action):
        view = await service.open_request(
            kind="complaint",
            channel="telegram",
            language="en",
            telegram_user_id=ALICE,
            fields={"text": "why do you send me adverts?"},
        )
        for step in PATH[status]:
            await DO[step](service, view.reference)
        assert (await service.get(view.reference)).status == status

        expected = ALLOWED.get((status, action))
        if (
            action == "info_received"
            and expected is None
            and status not in ("completed", "rejected", "cancelled", "expired")
        ):
            # A person's message on an open request that waits for nothing is simply added.
            await DO[action](service, view.reference)
            assert (await service.get(view.reference)).status == status
            continue
        if expected is None:
            with pytest.raises(IllegalTransition):
                await DO[action](service, view.reference)
            assert (await service.get(view.reference)).status == status, (status, action)
        else:
            await DO[action](service, view.reference)
            assert (await service.get(view.reference)).status == expected, (status, action)
