"""Who is asking: a request is verified by the sender's own Telegram contact or a mailed code.

A shared contact proves a phone number only when it is the sender's own card.
A mailed code proves only the mailbox it went to; a new code retires the
pending one, and the tries are counted. A request never verified expires
after the days the scheduler is given (:func:`verification_cutoff`).

A request of a kind the desk does at once (``at_once``: leaving mailings) is
handed to that work once its verification is committed
(:mod:`workflows.requests.at_once`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.errors import IdentityRefused, NotAllowed
from workflows.identity import (
    CodeOutcome,
    StoredCode,
    check_code,
    contact_phone,
    new_code,
    normalize_email,
    tries_left,
)
from workflows.outbox.queue import Audience, Channel, enqueue, reroute_unreachable
from workflows.persistence.tables import DataSubject, Request, Verification
from workflows.privacy.masking import mask_email
from workflows.requests.at_once import AtOnce
from workflows.requests.customer_match import match_customer
from workflows.requests.limits import ensure_can_send_code
from workflows.requests.states import Action, Status, next_status
from workflows.snapshots import Actor, ActorKind, RequestView


class VerificationMethod:
    TELEGRAM_CONTACT = "telegram_contact"
    EMAIL_CODE = "email_code"
    SMS_CODE = "sms_code"
    # A paper letter: the operator who registers it has checked it (``requests file``).
    POST = "post"


@dataclass(frozen=True)
class CodeCheck:
    """The answer to a typed or mailed confirmation code."""

    outcome: CodeOutcome
    tries_left: int
    request: RequestView


def verification_cutoff(now: datetime, days: int) -> datetime:
    """Requests received before this instant and still unverified have expired."""
    return now - timedelta(days=days)


class IdentityChecks(AtOnce):
    """The request service's use cases of proving who asks (a mixin)."""

    async def verify_by_contact(
        self, reference: str, *, sender_user_id: int, contact_user_id: int | None, phone: str
    ) -> RequestView:
        """Verify with the phone number Telegram vouches for.

        A shared contact proves the number only when it is the sender's own
        contact card: ``contact.user_id`` equal to the sender's id.
        """
        async with self._unit() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            self._check_owner(Actor.person_telegram(sender_user_id), subject)
            if contact_user_id != sender_user_id:
                await self._refuse_contact(session, request, sender_user_id)
                await session.commit()
                raise IdentityRefused("the shared contact is not the sender's own")
            await self._verify_contact(session, request, subject, sender_user_id, phone)
            view = await self._view(session, request)
        return await self._then_at_once(view)

    async def send_email_code(self, reference: str, actor: Actor, email: str) -> None:
        """Send a confirmation code to ``email`` (the Telegram dialog's alternative).

        A new code replaces any code still pending for the request. At most
        ``limits.codes_per_hour`` are sent for one person in an hour; past that,
        :class:`~workflows.requests.limits.TooManyCodes` says when the next may go.
        """
        normalised = normalize_email(email)
        async with self._unit() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            self._check_owner(actor, subject)
            next_status(Status(request.status), Action.VERIFY)
            now = self._clock.now()
            await ensure_can_send_code(session, subject.id, now, self.limits)
            code = await self._new_code(session, request, normalised, now)
            event = await self._audit(
                session, request, actor, "code_sent", request.status, None, {"method": "email"}
            )
            await enqueue(
                session,
                self._vault,
                now,
                key=f"{request.reference}/{event.id}/code",
                channel=Channel.EMAIL,
                audience=Audience.SUBJECT,
                template="verification_code",
                language=request.language,
                params={**self._params(request), "code": code},
                address=normalised,
                request_id=request.id,
            )

    async def verify_by_code(self, reference: str, attempt: str, actor: Actor) -> CodeCheck:
        """Check a confirmation code; the request is verified when it matches."""
        async with self._unit() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            row = await session.scalar(
                select(Verification)
                .where(
                    Verification.request_id == request.id,
                    Verification.method == VerificationMethod.EMAIL_CODE,
                )
                .order_by(Verification.id.desc())
                .limit(1)
            )
            if actor.kind is ActorKind.PERSON and actor.email is not None and row is not None:
                await self._check_code_address(session, request, row, actor.email)
            else:
                self._check_owner(actor, subject, allow_unknown_email=True)
            next_status(Status(request.status), Action.VERIFY)
            now = self._clock.now()
            outcome, left = self._try_code(row, attempt, now)
            if outcome is CodeOutcome.OK and row is not None:
                row.verified_at = now
                email = self._vault.decrypt(row.target_enc)
                subject.email_enc = self._vault.encrypt(email)
                subject.email_index = row.target_index
                await self._verified(session, request, subject, VerificationMethod.EMAIL_CODE)
                if subject.telegram_unreachable and email is not None:
                    await reroute_unreachable(session, self._vault, now, subject.id, email)
            else:
                await self._audit(
                    session,
                    request,
                    actor,
                    "code_refused",
                    request.status,
                    None,
                    {"outcome": outcome.value, "tries_left": left},
                )
            view = await self._view(session, request)
        if outcome is CodeOutcome.OK:
            view = await self._then_at_once(view)
        return CodeCheck(outcome, left, view)

    def _try_code(
        self, row: Verification | None, attempt: str, now: datetime
    ) -> tuple[CodeOutcome, int]:
        """The attempt checked against the stored code, its tries counted on ``row``."""
        if row is None or row.code_hash is None or row.code_salt is None:
            return CodeOutcome.DEAD, 0
        stored = StoredCode(
            code_hash=row.code_hash,
            salt=row.code_salt,
            created_at=row.created_at,
            expires_at=row.expires_at or now,
            attempts=row.attempts,
            dead=row.dead,
            used=row.used,
        )
        outcome, updated = check_code(stored, attempt, self._vault.code_key, now)
        row.attempts, row.dead, row.used = updated.attempts, updated.dead, updated.used
        return outcome, tries_left(updated)

    async def _check_code_address(
        self, session: AsyncSession, request: Request, row: Verification, email: str
    ) -> None:
        """A mailed code proves only the mailbox it went to: any other sender is refused.

        Refused before the code is looked at, so a stranger who knows the
        reference cannot use up the person's tries; the refusal is audited
        (the address masked) and kept, though :class:`NotAllowed` is raised.
        """
        normalised = normalize_email(email)
        if row.target_index == self._vault.blind_index("email", normalised):
            return
        await self._audit(
            session,
            request,
            Actor.system(Channel.EMAIL.value),
            "code_refused",
            request.status,
            None,
            {"outcome": "other_address", "sender": mask_email(normalised)},
        )
        await session.commit()
        raise NotAllowed("the code was not sent to this address")

    async def unverified_before(self, cutoff: datetime) -> list[str]:
        """References of requests still unverified that were received before ``cutoff``."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Request.reference)
                .where(
                    Request.status == Status.AWAITING_VERIFICATION.value,
                    Request.received_at < cutoff,
                )
                .order_by(Request.id)
            )
            return list(rows)

    # -- steps the intake shares -------------------------------------------------

    async def _refuse_contact(
        self, session: AsyncSession, request: Request, sender_user_id: int
    ) -> None:
        """Audit a shared contact card that is not the sender's own."""
        await self._audit(
            session,
            request,
            Actor.person_telegram(sender_user_id),
            "contact_refused",
            request.status,
            None,
            {"reason": "not the sender's own contact"},
        )

    async def _verify_contact(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        sender_user_id: int,
        phone: str,
    ) -> None:
        """Verify with the number of the sender's own contact card (checked by the caller)."""
        next_status(Status(request.status), Action.VERIFY)
        normalised = contact_phone(phone)
        now = self._clock.now()
        subject.phone_enc = self._vault.encrypt(normalised)
        subject.phone_index = self._vault.blind_index("phone", normalised)
        session.add(
            Verification(
                request_id=request.id,
                method=VerificationMethod.TELEGRAM_CONTACT,
                target_enc=self._vault.encrypt(normalised),
                target_index=subject.phone_index,
                telegram_user_id=sender_user_id,
                created_at=now,
                verified_at=now,
                used=True,
            )
        )
        await self._verified(session, request, subject, VerificationMethod.TELEGRAM_CONTACT)

    async def _verified(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        method: str,
        notice: str = "request_verified",
        by: Actor | None = None,
    ) -> None:
        now = self._clock.now()
        request.verified_at = now
        request.verified_by = method
        request.customer_id = await match_customer(session, subject)
        event = await self._move(
            session,
            request,
            Action.VERIFY,
            by or Actor(ActorKind.PERSON, request.channel),
            {"method": method, "customer_matched": request.customer_id is not None},
        )
        await self._to_subject(session, request, subject, event, notice)
        await self._to_staff(session, request, event, "staff_card")

    async def _new_code(
        self, session: AsyncSession, request: Request, email: str, now: datetime
    ) -> str:
        """A new code for ``email``, its row added; the request's pending codes retired."""
        pending = await session.scalars(
            select(Verification).where(
                Verification.request_id == request.id,
                Verification.method == VerificationMethod.EMAIL_CODE,
                Verification.used.is_(False),
                Verification.dead.is_(False),
            )
        )
        for old in pending:
            old.dead = True
        code, values = self._first_code(request, email, now)
        session.add(Verification(**values))
        return code

    def _first_code(
        self, request: Request, email: str, now: datetime
    ) -> tuple[str, dict[str, Any]]:
        """A code for a request that has none yet, and its ``verification`` row's values."""
        code, stored = new_code(now, self._vault.code_key, randbelow=self._randbelow)
        return code, {
            "request_id": request.id,
            "method": VerificationMethod.EMAIL_CODE,
            "target_enc": self._vault.encrypt(email),
            "target_index": self._vault.blind_index("email", email),
            "code_hash": stored.code_hash,
            "code_salt": stored.salt,
            "attempts": 0,
            "dead": False,
            "used": False,
            "created_at": now,
            "expires_at": stored.expires_at,
        }
