"""The suppression list: whom other company systems must stop mailing, processing or keep erased.

One line per customer whose request changed how their data may be used, as
JSON or as CSV; the person's words in it never run in a spreadsheet.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from workflows.csv_export import SafeWriter


@dataclass(frozen=True)
class Suppression:
    """One line of the list other company systems act on."""

    customer_id: str
    marketing_stopped_at: datetime | None
    processing_stopped_at: datetime | None
    processing_scope: str | None
    blocked_at: datetime | None
    erased_at: datetime | None
    erased_fields: tuple[str, ...]


def suppressions_json(items: Sequence[Suppression]) -> str:
    """The suppression list as JSON, for programs: dates in ISO 8601, ``null`` when unset."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return json.dumps(
        [
            {
                "customer_id": s.customer_id,
                "marketing_stopped_at": iso(s.marketing_stopped_at),
                "processing_stopped_at": iso(s.processing_stopped_at),
                "processing_scope": s.processing_scope,
                "blocked_at": iso(s.blocked_at),
                "erased_at": iso(s.erased_at),
                "erased_fields": list(s.erased_fields),
            }
            for s in items
        ],
        ensure_ascii=False,
        indent=2,
    )


SUPPRESSION_COLUMNS = (
    "customer_id",
    "marketing_stopped_at",
    "processing_stopped_at",
    "processing_scope",
    "blocked_at",
    "erased_at",
    "erased_fields",
)


def suppressions_csv(items: Sequence[Suppression]) -> str:
    """The suppression list as CSV; the person's words in it never run in a spreadsheet."""
    out = io.StringIO()
    writer = SafeWriter(out)
    writer.writerow(SUPPRESSION_COLUMNS)
    for s in items:
        writer.writerow(
            [
                s.customer_id,
                s.marketing_stopped_at.isoformat() if s.marketing_stopped_at else "",
                s.processing_stopped_at.isoformat() if s.processing_stopped_at else "",
                s.processing_scope or "",
                s.blocked_at.isoformat() if s.blocked_at else "",
                s.erased_at.isoformat() if s.erased_at else "",
                " ".join(s.erased_fields),
            ]
        )
    return out.getvalue()
