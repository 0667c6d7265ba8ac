"""What a customer import may not write: what the person's own requests took away.

A field the person had erased (an account deletion, a destruction) is never
written back, and a marketing consent they withdrew is never turned back on,
whatever the shop's file says and however often it is imported. A customer
whose processing is stopped (consent withdrawn) or blocked gets nothing new
from the file at all: the law's blocking pauses collecting and changing the
data, and a withdrawal stops collecting it. The reasons name fields and
dates, never values, so the import's report holds no personal data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from workflows.directory.field_rules import ACCOUNT_FIELD_NAMES
from workflows.persistence.tables import Customer


@dataclass(frozen=True)
class Hold:
    """What the person's requests let an import do to their row.

    ``values`` are the row's values that may be written; ``withheld`` says
    what was left out of them and since when. ``paused`` is not empty when
    nothing at all may change (processing stopped or blocked) and says why.
    """

    values: dict[str, Any]
    withheld: tuple[str, ...] = ()
    paused: tuple[str, ...] = ()


def hold_for(customer: Customer, values: Mapping[str, Any], tz: tzinfo) -> Hold:
    """The :class:`Hold` on ``values`` (a parsed row of the file) for this ``customer``."""
    erased = set(customer.erased_fields or ())
    kept = {column: value for column, value in values.items() if column not in erased}
    withheld: list[str] = []
    restoring = [f for f in ACCOUNT_FIELD_NAMES if f in erased and values.get(f) is not None]
    if restoring:
        withheld.append(
            f"{', '.join(restoring)} erased on {_day(customer.erased_at, tz)}, not restored"
        )
    if customer.marketing_stopped_at is not None and kept.get("marketing_consent") is True:
        kept["marketing_consent"] = False
        withheld.append(
            f"marketing_consent withdrawn on {_day(customer.marketing_stopped_at, tz)},"
            " kept withdrawn"
        )
    paused: list[str] = []
    if customer.processing_stopped_at is not None:
        paused.append(
            f"processing stopped on {_day(customer.processing_stopped_at, tz)},"
            " the row's changes not applied"
        )
    if customer.blocked_at is not None:
        paused.append(
            f"processing blocked on {_day(customer.blocked_at, tz)}, the row's changes not applied"
        )
    return Hold(kept, tuple(withheld), tuple(paused))


def _day(instant: datetime | None, tz: tzinfo) -> str:
    return instant.astimezone(tz).date().isoformat() if instant is not None else "an earlier date"
