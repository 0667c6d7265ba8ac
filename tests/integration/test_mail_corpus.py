"""The corpus of real-looking letters: each one's expected outcome, parsed and then taken in."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.intake import MailIntake
from mail.outcomes import Outcome
from mail.parsing import parse_mail
from mail.understanding import Disposition, understand
from tests.clocks import FrozenClock
from tests.mail_corpus import CAP, EXPECTED, letter
from tests.paths import MAIL_CORPUS as CORPUS
from workflows.kinds import RequestKind
from workflows.outbox.queue import Audience
from workflows.persistence.tables import InboundMail, OutboxItem
from workflows.privacy.vault import Vault
from workflows.requests.service import RequestService

_RECORD_ONLY = {"auto_reply", "bounce", "bulk", "spam"}


def test_the_corpus_is_large_and_covers_every_case() -> None:
    names = {path.stem for path in CORPUS.glob("*.eml")}
    assert names == set(EXPECTED)
    assert len(names) >= 40
    outcomes = {entry["outcome"] for entry in EXPECTED.values()}
    assert outcomes == {"opened", "auto_reply", "bounce", "bulk", "spam", "quarantined"}
    languages = {entry.get("language") for entry in EXPECTED.values()} - {None}
    assert languages == {"kk", "ru", "en"}
    assert len(letter("bad_huge_body")) >= 3 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_letter_is_understood_as_expected(name: str) -> None:
    expected = EXPECTED[name]
    mail = parse_mail(letter(name))
    if expected["outcome"] == "quarantined":
        assert mail.sender is None
        return
    understood = understand(mail)
    if expected["outcome"] in _RECORD_ONLY:
        assert understood.disposition == Disposition(expected["outcome"]), understood
        return
    assert understood.disposition is Disposition.REQUEST, understood
    kind = understood.kind.value if understood.kind is not None else "unclassified"
    assert kind == expected["kind"], (understood, mail.subject, mail.text)
    if "likely" in expected:
        assert RequestKind(expected["likely"]) in understood.candidates, understood
    assert understood.language == expected["language"]
    for name_of_field in ("phone", "full_name", "correction"):
        if name_of_field in expected:
            assert understood.fields.get(name_of_field) == expected[name_of_field]
    # What the person wrote reads as words, whatever the charset label said.
    assert "\ufffd" not in mail.text
    assert "\r" not in mail.subject and "\n" not in mail.subject


async def test_the_whole_corpus_taken_in(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    intake = MailIntake(service, sessions, vault, clock, max_attachment_bytes=CAP)

    for uid, name in enumerate(sorted(EXPECTED), start=1):
        expected = EXPECTED[name]
        result = await intake.handle(letter(name), uid=uid)

        assert result.outcome == Outcome(expected["outcome"]), (name, result)
        if result.outcome is not Outcome.OPENED:
            assert result.reference is None
            continue
        assert result.reference is not None
        view = await service.get(result.reference)
        assert (view.kind, view.language, view.channel) == (
            expected["kind"],
            expected["language"],
            "email",
        ), name
        if "missing" in expected:
            assert list(view.missing_fields) == expected["missing"], name
        evidence = await service.evidence(result.reference)
        assert len(evidence) == expected.get("evidence", 0), name
        assert len(result.refused_files) == expected.get("refused", 0), name

    async with sessions() as session:
        rows = (await session.scalars(select(InboundMail).order_by(InboundMail.uid))).all()
        outbox = (await session.scalars(select(OutboxItem))).all()
    assert len(rows) == len(EXPECTED)
    opened = [n for n, e in EXPECTED.items() if e["outcome"] == "opened"]
    person_mail = [o for o in outbox if o.audience == Audience.SUBJECT.value]
    acknowledgements = [o for o in person_mail if o.template == "request_received_code"]
    refused_notes = [o for o in person_mail if o.template == "attachment_refused"]
    # Every request is acknowledged once; nothing else (auto-replies, spam) is answered.
    assert len(acknowledgements) == len(opened)
    assert len(refused_notes) == 1
    assert len(person_mail) == len(opened) + 1
    quarantined = [r for r in rows if r.outcome == "quarantined"]
    assert all(r.raw_enc is not None for r in quarantined)
    assert vault.decrypt_bytes(quarantined[0].raw_enc or b"")  # kept readable for staff
    notices = [o for o in outbox if o.template == "staff_mail_quarantined"]
    assert len(notices) == len(quarantined) == 2


async def test_the_same_letter_twice_makes_one_request(
    service: RequestService,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    clock: FrozenClock,
) -> None:
    intake = MailIntake(service, sessions, vault, clock)
    raw = letter("ru_delete_cp1251")
    no_id = letter("bad_no_message_id")

    first = await intake.handle(raw, folder="INBOX", uid=1)
    again = await intake.handle(raw, folder="Archive", uid=7)
    once = await intake.handle(no_id, uid=2)
    twice = await intake.handle(no_id, uid=3)

    assert (first.outcome, again.outcome) == (Outcome.OPENED, Outcome.DUPLICATE)
    assert (once.outcome, twice.outcome) == (Outcome.OPENED, Outcome.DUPLICATE)
    assert len(await service.list_requests()) == 2
    async with sessions() as session:
        assert await session.scalar(select(func.count(InboundMail.id))) == 2
