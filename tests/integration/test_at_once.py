"""Work the desk does at once (``at_once`` kinds: leaving mailings), in the core.

The channels' stories are in tests/e2e/test_unsubscribe_at_once.py; here the
rules the request service keeps whoever calls it: only a verified request of
an ``at_once`` kind, only while it waits for staff, and only the desk may
complete it without staff.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.fulfilment_desk import ALICE, PHONE, DownCrm, filed, notices
from workflows.directory.sql_directory import SqlDirectory
from workflows.errors import NotAllowed
from workflows.fulfilment.work import Fulfilment
from workflows.privacy.vault import Vault
from workflows.requests.records import DESK
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

DANA = Actor.staff(STAFF_ID, "Dana")


@pytest.fixture
def at_once(service: RequestService, directory: SqlDirectory, clock: FrozenClock) -> Fulfilment:
    """The fulfilment, handed each verified request of an ``at_once`` kind (as the channels do)."""
    fulfilment = Fulfilment(service, directory, clock)
    fulfilment.act_at_once()
    return fulfilment


async def test_a_verified_unsubscribe_is_completed_by_the_desk_and_the_person_told(
    service: RequestService,
    at_once: Fulfilment,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    reference = await filed(service, "unsubscribe")

    view = await service.get(reference, with_events=True)
    assert view.status == "completed"
    assert [(e.action, e.actor, e.actor_name) for e in view.events][-3:] == [
        ("verify", "person", None),
        ("approve", "system", "desk"),
        ("complete", "system", "desk"),
    ]
    (entry,) = await directory.suppressions()
    assert entry.marketing_stopped_at is not None
    assert len(await notices(sessions, vault, "unsubscribed")) == 1


async def test_other_kinds_still_wait_for_staff(
    service: RequestService,
    at_once: Fulfilment,
    directory: SqlDirectory,
) -> None:
    reference = await filed(service, "withdraw_consent", full_name="A", data_concerned="all")

    assert (await service.get(reference)).status == "verified"
    assert await directory.suppressions() == []
    with pytest.raises(NotAllowed):
        await service.approve_at_once(reference)
    await service.approve(reference, DANA)
    with pytest.raises(NotAllowed):  # nor may the desk complete what staff approved
        await service.complete(reference, DESK)


async def test_a_verified_request_staff_make_an_unsubscribe_is_done_then(
    service: RequestService,
    at_once: Fulfilment,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    asked = await filed(service, "complaint", text="Stop the newsletters, please")
    taken = await filed_for(service, 700200, "complaint", text="No more adverts")
    await service.take(taken, DANA)

    done = await service.change_kind(asked, DANA, "unsubscribe")
    held = await service.change_kind(taken, DANA, "unsubscribe")

    assert done.status == "completed"
    events = (await service.get(asked, with_events=True)).events
    assert [(e.action, e.actor) for e in events][-2:] == [
        ("approve", "system"),
        ("complete", "system"),
    ]
    assert len(await notices(sessions, vault, "unsubscribed")) == 1
    assert held.status == "in_review"  # a staff member has it: theirs to approve


async def filed_for(service: RequestService, user_id: int, kind: str, **fields: str) -> str:
    view = await service.open_request(
        kind=kind, channel="telegram", language="ru", telegram_user_id=user_id, fields=fields
    )
    await service.verify_by_contact(
        view.reference, sender_user_id=user_id, contact_user_id=user_id, phone="+77017654321"
    )
    return view.reference


async def test_an_unverified_unsubscribe_is_never_done(
    service: RequestService,
    at_once: Fulfilment,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
) -> None:
    view = await service.open_request(
        kind="unsubscribe", channel="telegram", language="ru", telegram_user_id=ALICE, fields={}
    )
    await service.send_email_code(view.reference, Actor.person_telegram(ALICE), "a@mail.kz")
    wrong = await service.verify_by_code(view.reference, "000000", Actor.person_telegram(ALICE))

    assert wrong.request.status == "awaiting_verification"
    for attempt in (at_once.at_once(view), service.approve_at_once(view.reference)):
        with pytest.raises(NotAllowed, match="verified"):
            await attempt
    assert await directory.suppressions() == []
    assert await notices(sessions, vault, "unsubscribed") == []
    assert (await service.get(view.reference)).status == "awaiting_verification"


async def test_one_taken_by_staff_is_left_to_them(
    service: RequestService,
    directory: SqlDirectory,
    clock: FrozenClock,
) -> None:
    reference = await filed(service, "unsubscribe")  # no at-once work given: it waits
    await service.take(reference, DANA)

    with pytest.raises(NotAllowed):
        await Fulfilment(service, directory, clock).at_once(await service.get(reference))
    assert (await service.get(reference)).status == "in_review"


async def test_a_failing_directory_leaves_it_approved_and_alerts_staff_verification_stands(
    service: RequestService,
    directory: SqlDirectory,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    record = await directory.lookup(customer_id="C-1001")
    assert record is not None
    Fulfilment(service, DownCrm({"C-1001": record}), clock).act_at_once()
    view = await service.open_request(
        kind="unsubscribe", channel="telegram", language="kk", telegram_user_id=ALICE, fields={}
    )

    verified = await service.verify_by_contact(
        view.reference, sender_user_id=ALICE, contact_user_id=ALICE, phone=PHONE
    )

    assert verified.verified_at is not None
    assert verified.status == "approved"  # Complete on the card tries again
    (alert,) = await notices(sessions, vault, "staff_fulfilment_failed")
    assert alert["reference"] == view.reference
    assert await notices(sessions, vault, "unsubscribed") == []
    assert len(await notices(sessions, vault, "request_verified")) == 1
