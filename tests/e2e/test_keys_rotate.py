"""Key rotation: the stored data moves to a new key, and the old key can then be dropped."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aina_dsr.settings import SettingsError, encryption_keys_or_dev, load_settings
from tests.audit_tampering import rewrite_and_rehash
from tests.cli_command import aina_dsr, aina_dsr_here, rotate
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID, STAFF_IDS
from tests.paths import DATA
from workflows.deadlines.calendar import WorkingCalendar
from workflows.directory.csv_import import import_customers
from workflows.directory.store import find_customer
from workflows.persistence.engines import make_sessionmaker
from workflows.persistence.tables import AuditEvent, ConversationState, Message, Request
from workflows.privacy.audit import verify_chain
from workflows.privacy.vault import Vault, VaultError
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

ALICE = 700100
PHONE = "+77011234567"  # C-1001 in tests/data/customers.csv
EMAIL = "aigerim.seitkali@mail.kz"
STAFF = Actor.staff(STAFF_ID, "Dana (privacy officer)")


@pytest.fixture
def new_key() -> str:
    return Vault.generate_key()


def desk(
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    calendar: WorkingCalendar,
    *keys: str,
) -> RequestService:
    """The desk restarted with ``keys``: it encrypts with the first and signs audit events
    with it, on the same database."""
    vault = Vault(*keys)
    restarted = make_sessionmaker(sessions.kw["bind"], vault)
    return RequestService(restarted, vault, clock, calendar, staff_user_ids=STAFF_IDS)


async def a_desk_in_use(
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    calendar: WorkingCalendar,
    key: str,
) -> str:
    """Customers imported; a Telegram request verified by phone with a file; an e-mail request
    waiting for its code; a dialog half-way. Returns the Telegram request's reference."""
    vault = Vault(key)
    service = desk(sessions, clock, calendar, key)
    await import_customers(sessions, vault, DATA / "customers.csv", now=clock.now(), tz=calendar.tz)
    view = await service.open_request(
        kind="complaint",
        channel="telegram",
        language="kk",
        telegram_user_id=ALICE,
        fields={"text": "Маған спам келеді", "full_name": "Айгерим Сейтқали"},
        body="Маған спам келеді",
    )
    verified = await service.verify_by_contact(
        view.reference, sender_user_id=ALICE, contact_user_id=ALICE, phone="77011234567"
    )
    assert verified.customer_matched
    await service.take(view.reference, STAFF)
    await service.attach(
        view.reference,
        Actor.person_telegram(ALICE),
        body="скриншот",
        evidence=[Evidence("screen.png", "image/png", b"\x89PNG fake")],
    )
    by_mail = await service.open_request(
        kind="unsubscribe",
        channel="email",
        language="ru",
        email=EMAIL,
        body="Отпишите меня",
        send_code_to_email=True,
    )
    await service.send_email_code(by_mail.reference, Actor.person_email(EMAIL), EMAIL)
    async with sessions.begin() as session:
        session.add(
            ConversationState(
                key="bot:1:1",
                state="Dialog:name",
                data_enc=vault.encrypt_json({"name": "Айгерим"}),
                updated_at=clock.now(),
            )
        )
    return view.reference


def check(tmp_path: Path, database_url: str, keys: str) -> tuple[int, str, str]:
    result = aina_dsr_here(
        tmp_path, "keys", "check", DSR_DATABASE_URL=database_url, DSR_ENCRYPTION_KEY=keys
    )
    return result.returncode, result.stdout, result.stderr


async def test_after_rotation_the_desk_works_with_the_new_key_alone(
    tmp_path: Path,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    calendar: WorkingCalendar,
    encryption_key: str,
    new_key: str,
) -> None:
    old_key = encryption_key
    reference = await a_desk_in_use(sessions, clock, calendar, old_key)
    # Step 2: the desk restarted with NEW,OLD reads what OLD wrote.
    both = desk(sessions, clock, calendar, new_key, old_key)
    assert (await both.get(reference)).fields["text"] == "Маған спам келеді"

    code, out, err = await asyncio.to_thread(rotate, tmp_path, database_url, f"{new_key},{old_key}")

    assert code == 0, err
    assert out.startswith("rotated: ")
    assert "data_subject: " in err and "attachment: " in err
    assert "Traceback" not in err
    assert old_key not in out + err and new_key not in out + err
    code, out, err = await asyncio.to_thread(check, tmp_path, database_url, new_key)
    assert code == 0, out + err
    assert out.startswith("all ")

    # The old key is gone: everything reads, every lookup finds.
    alone = desk(sessions, clock, calendar, new_key)
    view = await alone.get(reference, with_events=True)
    assert view.fields == {"text": "Маған спам келеді", "full_name": "Айгерим Сейтқали"}
    assert [e.filename for e in await alone.evidence(reference)] == ["screen.png"]
    assert await alone.messages(reference) == [
        ("in", "telegram", "Маған спам келеді"),
        ("in", "telegram", "скриншот"),
    ]
    assert (await alone.subject_contacts(reference))["phone"] == PHONE
    for lookup in ({"phone": "8 701 123 45 67"}, {"email": EMAIL}, {"iin": "950314401237"}):
        found = await find_customer(sessions, Vault(new_key), **lookup)
        assert found is not None and found.id == "C-1001", lookup
    # A second e-mail from the same address is the same person (the subject's e-mail index).
    again = await alone.open_request(
        kind="access", channel="email", language="ru", email=EMAIL, body="И ещё"
    )
    first_by_mail = next(v for v in await alone.list_requests() if v.kind == "unsubscribe")
    assert again.subject_id == first_by_mail.subject_id
    # A new Telegram request verified by the same phone still matches the customer.
    other = await alone.open_request(
        kind="access", channel="telegram", language="kk", telegram_user_id=ALICE + 1
    )
    matched = await alone.verify_by_contact(
        other.reference, sender_user_id=ALICE + 1, contact_user_id=ALICE + 1, phone=PHONE
    )
    assert matched.customer_matched
    assert (await verify_chain(sessions, Vault(new_key))).intact
    with pytest.raises(VaultError):
        await desk(sessions, clock, calendar, old_key).get(reference)


async def test_a_value_left_under_the_old_key_is_named_by_the_check(
    tmp_path: Path,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    calendar: WorkingCalendar,
    encryption_key: str,
    new_key: str,
) -> None:
    old_key = encryption_key
    reference = await a_desk_in_use(sessions, clock, calendar, old_key)
    code, _, err = await asyncio.to_thread(rotate, tmp_path, database_url, f"{new_key},{old_key}")
    assert code == 0, err
    # Something wrote under the old key after the rotation (a process not restarted, say).
    async with sessions.begin() as session:
        request_id = await session.scalar(select(Request.id).where(Request.reference == reference))
        await session.execute(
            update(Message)
            .where(Message.request_id == request_id)
            .values(body_enc=Vault(old_key).encrypt("ещё под старым ключом"))
        )

    code, out, err = await asyncio.to_thread(check, tmp_path, database_url, new_key)
    assert code == 1
    assert "message.body_enc: 2 value(s)" in out
    assert "cannot be read with the first key" in err
    code, out, err = await asyncio.to_thread(check, tmp_path, database_url, f"{new_key},{old_key}")
    assert code == 1
    assert "message.body_enc: 2 value(s)" in out
    assert "still under an older key" in err

    # A second rotation picks it up; then the check passes.
    code, out, err = await asyncio.to_thread(rotate, tmp_path, database_url, f"{new_key},{old_key}")
    assert code == 0, err
    assert out.startswith("rotated: 2 value(s) re-encrypted, 0 index(es) recomputed")
    code, out, err = await asyncio.to_thread(check, tmp_path, database_url, new_key)
    assert code == 0, out + err


def audit_verify(tmp_path: Path, database_url: str, keys: str) -> subprocess.CompletedProcess[str]:
    return aina_dsr_here(
        tmp_path,
        "audit",
        "verify",
        "--json",
        DSR_DATABASE_URL=database_url,
        DSR_ENCRYPTION_KEY=keys,
    )


async def test_the_audit_log_verifies_before_during_and_after_a_rotation(
    tmp_path: Path,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    calendar: WorkingCalendar,
    encryption_key: str,
    new_key: str,
) -> None:
    old_key = encryption_key
    reference = await a_desk_in_use(sessions, clock, calendar, old_key)
    async with sessions() as session:
        first = await session.scalar(select(AuditEvent.id).order_by(AuditEvent.id))
    # Restarted with NEW,OLD: what the desk records now is signed with NEW, and the log,
    # signed with both, holds under both.
    both = desk(sessions, clock, calendar, new_key, old_key)
    await both.ask_info(reference, STAFF, "Какой адрес почты вы указывали?")
    mixed = await asyncio.to_thread(audit_verify, tmp_path, database_url, f"{new_key},{old_key}")
    assert mixed.returncode == 0, mixed.stdout + mixed.stderr
    # Until the rotation, the log needs OLD: the check says so.
    code, out, err = await asyncio.to_thread(check, tmp_path, database_url, new_key)
    assert code == 1
    assert "audit_event" in out

    code, out, err = await asyncio.to_thread(rotate, tmp_path, database_url, f"{new_key},{old_key}")
    assert code == 0, err
    assert "audit_event: " in err
    code, out, err = await asyncio.to_thread(check, tmp_path, database_url, new_key)
    assert code == 0, out + err

    # OLD is gone: the whole log verifies with NEW alone, every event the same as before.
    alone = await asyncio.to_thread(audit_verify, tmp_path, database_url, new_key)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    report = json.loads(alone.stdout)
    assert report["intact"] is True
    async with sessions() as session:
        assert report["events"] == await session.scalar(select(func.count(AuditEvent.id)))
    # And it is still keyed: an event from before the rotation, rewritten with its
    # followers linked again, is caught.
    assert first is not None
    await rewrite_and_rehash(sessions, first, actor_name="Somebody else")
    broken = await asyncio.to_thread(audit_verify, tmp_path, database_url, new_key)
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["broken_at"] == first


def test_rotate_with_one_key_says_how_to_set_two(tmp_path: Path, encryption_key: str) -> None:
    result = aina_dsr(tmp_path, "keys", "rotate", DSR_ENCRYPTION_KEY=encryption_key)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "aina-dsr: DSR_ENCRYPTION_KEY: holds one key: put the new key first and the old one "
        "after it (NEW,OLD), restart the desk with that, then rotate"
    ]


def test_a_wrong_key_among_several_is_one_line_without_the_value(
    tmp_path: Path, encryption_key: str
) -> None:
    result = aina_dsr(tmp_path, "keys", "check", DSR_ENCRYPTION_KEY=f"{encryption_key},nonsense")

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aina-dsr: DSR_ENCRYPTION_KEY: is not a valid")
    assert encryption_key not in result.stderr and "nonsense" not in result.stderr


def test_retention_purge_dry_run_from_the_command_line(tmp_path: Path, encryption_key: str) -> None:
    result = aina_dsr(
        tmp_path,
        "retention",
        "purge",
        "--dry-run",
        "--json",
        DSR_ENCRYPTION_KEY=encryption_key,
        DSR_RETENTION_DAYS="400",
    )

    assert result.returncode == 0, result.stderr
    assert '"retention_days": 400' in result.stdout and '"dry_run": true' in result.stdout


def test_several_keys_are_read_in_order_the_first_one_current(
    monkeypatch: pytest.MonkeyPatch, encryption_key: str, new_key: str
) -> None:
    monkeypatch.setenv("DSR_ENCRYPTION_KEY", f" {new_key} , {encryption_key} ")

    assert encryption_keys_or_dev(load_settings()) == (new_key, encryption_key)
    monkeypatch.setenv("DSR_ENCRYPTION_KEY", f"{new_key},{new_key}")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert (caught.value.variable, caught.value.problem) == (
        "DSR_ENCRYPTION_KEY",
        "names the same key twice",
    )
