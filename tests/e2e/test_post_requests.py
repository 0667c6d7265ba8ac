"""Requests by post: ``aina-dsr requests file --channel post``, the card, and letters to post.

The real command in a subprocess files into the test's database; the running
desk (the real Bot against the Bot API stand-in) posts the card and hands each
notice to the staff group as a letter to print, with the postal address.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tests.botapi import Call
from tests.cli_command import aina_dsr, aina_dsr_here
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.telegram_desk import STAFF_CHAT, Desk, words
from workflows.i18n import format_date, kind_name
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

NAME = "Серікова Әлия"
ADDRESS = "050000, Алматы, Абай даңғылы 10, 5 пәтер"
DANA = Actor.staff(STAFF_ID, "Dana")


def env(database_url: str, key: str) -> dict[str, str]:
    return {"DSR_DATABASE_URL": database_url, "DSR_ENCRYPTION_KEY": key}


def text(call: Call) -> str:
    return str(call.params.get("text", ""))


def file_letter(tmp_path: Path, settings: dict[str, str], *extra: str, received: str) -> str:
    result = aina_dsr(
        tmp_path,
        "requests",
        "file",
        "--channel",
        "post",
        "--kind",
        "block",
        "--received",
        received,
        "--name",
        NAME,
        "--address",
        ADDRESS,
        "--language",
        "kk",
        "--phone",
        "+7 701 111 22 33",
        "--text",
        "Деректерімді уақытша бұғаттауды сұраймын: оларды рұқсатсыз пайдаланады.",
        "--by",
        "Dana",
        *extra,
        **settings,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_a_letter_by_post_runs_from_its_date_and_is_answered_by_post(
    desk: Desk,
    service: RequestService,
    clock: FrozenClock,
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
) -> None:
    # The command runs on the machine's clock: the desk's is set after it, so what the
    # command queued is due for the desk.
    clock.set(datetime.now(UTC) + timedelta(hours=1))
    settings = env(database_url, encryption_key)
    # Received on Monday 15 December 2025: one working day over Independence Day.
    printed = json.loads(file_letter(tmp_path, settings, "--json", received="2025-12-15"))
    reference = printed["reference"]
    assert (printed["channel"], printed["kind"], printed["status"]) == ("post", "block", "verified")
    assert printed["received_at"].startswith("2025-12-15T00:00:00")
    assert printed["due_at"].startswith("2025-12-17")
    assert printed["verified_by"] == "post"

    # The running desk posts the card, as for any verified request.
    card = await desk.expect(
        STAFF_CHAT,
        0,
        lambda c: reference in text(c) and words("ru", "channel.post") in text(c),
        methods=("sendMessage",),
    )
    assert NAME in text(card) and "Абай даңғылы 10" in text(card)
    assert words("ru", "verified_by.post") in text(card)

    # The person's notice is a letter to post: in the staff group, with the address, in
    # the person's language, naming the deadline.
    heading = words("ru", "staff.post_letter", reference=reference, name=NAME, address=ADDRESS)
    letter = await desk.expect(STAFF_CHAT, 0, lambda c: text(c).startswith(heading))
    assert kind_name("kk", "block") in text(letter)
    assert format_date("kk", date(2025, 12, 17)) in text(letter)
    assert "Рахмет" in text(letter)
    elsewhere = [call for call in desk.api.calls() if str(call.chat_id) != str(STAFF_CHAT)]
    assert all("Рахмет" not in text(call) for call in elsewhere)

    # Staff ask for more: that, too, is a letter to post, and `requests show` lists both.
    await service.ask_info(reference, DANA, "Қандай деректер туралы жазып отырсыз?")
    await desk.expect(STAFF_CHAT, 0, lambda c: heading in text(c) and "Қандай деректер" in text(c))
    shown_json = aina_dsr_here(tmp_path, "requests", "show", reference, "--json", **settings)
    shown = json.loads(shown_json.stdout)
    letters = shown["letters_to_post"]
    assert [item["template"] for item in letters] == ["post_registered", "info_requested"]
    assert letters[0]["status"] == "sent" and letters[0]["handed_to_staff_at"]
    assert "Қандай деректер" in letters[1]["text"]
    as_text = aina_dsr_here(tmp_path, "requests", "show", reference, **settings)
    assert as_text.returncode == 0, as_text.stderr
    assert "letter to post 2: info_requested" in as_text.stdout
    assert "Қандай деректер" in as_text.stdout


async def test_a_letter_from_the_future_or_of_an_unknown_kind_is_refused_in_one_line(
    service: RequestService, database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    settings = env(database_url, encryption_key)
    common = ("--channel", "post", "--name", NAME, "--address", ADDRESS, "--language", "ru")

    future = aina_dsr_here(
        tmp_path, "requests", "file", *common, "--kind", "access", "--received", "2099-01-05",
        **settings,
    )  # fmt: skip
    assert future.returncode == 2
    assert future.stderr.startswith("aina-dsr: the date of receipt 2099-01-05 is after today")
    assert len(future.stderr.splitlines()) == 1

    unknown = aina_dsr_here(
        tmp_path, "requests", "file", *common, "--kind", "refund", "--received", "2025-12-15",
        **settings,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("aina-dsr: unknown kind 'refund'; one of: access, rectify")
    assert len(unknown.stderr.splitlines()) == 1

    garbled = aina_dsr_here(
        tmp_path, "requests", "file", *common, "--kind", "access", "--received", "15.12.2025",
        **settings,
    )  # fmt: skip
    assert garbled.returncode == 2
    assert len(garbled.stderr.splitlines()) == 1
    assert await service.list_requests() == []
