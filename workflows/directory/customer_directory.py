"""The customer directory as fulfilment sees it: five methods a company's CRM may implement.

The desk's own SQL tables are one implementation
(:class:`~workflows.directory.sql_directory.SqlDirectory`); a company may plug
in its CRM with the same five methods instead. What a request may erase or
correct are the account's fields (:mod:`workflows.directory.field_rules`);
purchases are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from workflows.directory.field_rules import ACCOUNT_FIELD_NAMES
from workflows.directory.store import CustomerRecord
from workflows.directory.suppressions import Suppression
from workflows.errors import DomainError

# What deleting an account erases (policy, section 2), in the order it is reported.
ACCOUNT_FIELDS = (
    "full_name",
    "iin",
    "phone",
    "email",
    "gender",
    "birth_date",
    "language",
)
# What staff may correct or destroy by name: the fields the field rules know.
DIRECTORY_FIELDS = frozenset(ACCOUNT_FIELD_NAMES)


class DirectoryError(DomainError):
    """The directory cannot do what was asked; the message says why (no personal data)."""


@dataclass(frozen=True)
class Flags:
    """What a request changes in how the company may use the person's data."""

    marketing_stopped: bool | None = None
    processing_stopped: bool | None = None
    processing_scope: str | None = None
    blocked: bool | None = None


class CustomerDirectory(Protocol):
    """Where the company keeps its customers: this desk's SQL tables, or a CRM."""

    async def lookup(
        self,
        *,
        customer_id: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        iin: str | None = None,
    ) -> CustomerRecord | None: ...

    async def erase(self, customer_id: str, fields: Sequence[str]) -> list[str]:
        """Erase these fields; return the names of those that held a value."""
        ...

    async def update(self, customer_id: str, changes: Mapping[str, str]) -> list[str]:
        """Set these fields (already validated); return the names that changed."""
        ...

    async def set_flags(self, customer_id: str, flags: Flags) -> None: ...

    async def suppressions(self) -> list[Suppression]: ...
