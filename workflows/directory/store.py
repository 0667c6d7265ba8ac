"""The customer directory's records: a customer and their purchases, found by identifier.

Rows are stored encrypted, with blind indexes for phone, e-mail and IIN
(:mod:`workflows.directory.csv_import` writes them); what leaves here is a
decrypted record whose personal values stay out of ``repr``, and so out of logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.identity import normalize_email, normalize_phone, validate_iin
from workflows.persistence.tables import Customer, Purchase
from workflows.privacy.vault import Vault


@dataclass(frozen=True)
class PurchaseRecord:
    """One purchase as the directory holds it."""

    purchase_id: str
    purchased_at: datetime | None
    description: str | None = field(repr=False)
    amount: Decimal | None


@dataclass(frozen=True)
class CustomerRecord:
    """A customer, decrypted; personal values stay out of ``repr`` (and so out of logs)."""

    id: str
    full_name: str | None = field(repr=False)
    phone: str | None = field(repr=False)
    email: str | None = field(repr=False)
    iin: str | None = field(repr=False)
    gender: str | None = field(repr=False)
    birth_date: date | None = field(repr=False)
    language: str | None
    marketing_consent: bool
    registered_at: datetime | None
    imported_at: datetime
    updated_at: datetime
    purchases: tuple[PurchaseRecord, ...] = ()


async def find_customer(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    *,
    phone: str | None = None,
    email: str | None = None,
    iin: str | None = None,
) -> CustomerRecord | None:
    """The customer with every identifier given (in any usual spelling), with purchases.

    Raises :class:`~workflows.identity.InvalidIdentifier` for an identifier
    that cannot be one, and :class:`ValueError` when none is given. When
    several customers share the identifiers, the one imported first wins.
    """
    conditions = []
    if phone is not None:
        conditions.append(
            Customer.phone_index == vault.blind_index("phone", normalize_phone(phone))
        )
    if email is not None:
        conditions.append(
            Customer.email_index == vault.blind_index("email", normalize_email(email))
        )
    if iin is not None:
        conditions.append(Customer.iin_index == vault.blind_index("iin", validate_iin(iin)))
    if not conditions:
        raise ValueError("give a phone, an e-mail or an IIN to look for")
    async with sessions() as session:
        customer = await session.scalar(
            select(Customer).where(*conditions).order_by(Customer.id).limit(1)
        )
        if customer is None:
            return None
        return await customer_record(session, vault, customer)


async def customer_record(
    session: AsyncSession, vault: Vault, customer: Customer
) -> CustomerRecord:
    """A customer row, decrypted, with its purchases."""
    purchases = await session.scalars(
        select(Purchase)
        .where(Purchase.customer_id == customer.id)
        .order_by(Purchase.purchased_at, Purchase.id)
    )
    bought = tuple(
        PurchaseRecord(
            purchase_id=p.external_id,
            purchased_at=p.purchased_at,
            description=vault.decrypt(p.description_enc),
            amount=p.amount,
        )
        for p in purchases
    )
    born = vault.decrypt(customer.birth_date_enc)
    return CustomerRecord(
        id=customer.external_id,
        full_name=vault.decrypt(customer.full_name_enc),
        phone=vault.decrypt(customer.phone_enc),
        email=vault.decrypt(customer.email_enc),
        iin=vault.decrypt(customer.iin_enc),
        gender=vault.decrypt(customer.gender_enc),
        birth_date=date.fromisoformat(born) if born else None,
        language=customer.language,
        marketing_consent=customer.marketing_consent,
        registered_at=customer.registered_at,
        imported_at=customer.imported_at,
        updated_at=customer.updated_at,
        purchases=bought,
    )
