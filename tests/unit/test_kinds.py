"""The kinds table: the design's clocks, the shorter one running, the fields each kind needs."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import pytest

from workflows.deadlines.calendar import WorkingCalendar
from workflows.kinds import (
    CLASSIFIED_KINDS,
    DEFAULT_KINDS,
    ClockSpec,
    ClockStart,
    DayUnit,
    KindTableError,
    RequestKind,
    four_eyes_kinds,
    parse_kinds,
)

CALENDAR = WorkingCalendar()
W, C = DayUnit.WORKING, DayUnit.CALENDAR

# The design's table, written out again here on purpose: a change to kinds.toml
# that drifts from the design must fail a test.
DESIGN = {
    "access": ((3, W), (30, C), "received"),
    "rectify": ((1, W), (7, W), "confirmation"),
    "delete_account": ((15, W), None, "received"),
    "withdraw_consent": ((15, W), (30, C), "received"),
    "unsubscribe": ((15, W), (30, C), "received"),
    "block": ((1, W), None, "received"),
    "destroy_unlawful": ((1, W), (7, W), "confirmation"),
    "complaint": (None, (30, C), "received"),
}


@pytest.mark.parametrize("kind", CLASSIFIED_KINDS)
def test_every_kind_carries_the_designs_clocks(kind: RequestKind) -> None:
    law, policy, starts = DESIGN[kind.value]
    spec = DEFAULT_KINDS[kind]
    assert spec.law == (ClockSpec(*law) if law else None)
    assert spec.policy == (ClockSpec(*policy) if policy else None)
    assert spec.starts is ClockStart(starts)


def test_access_runs_on_the_laws_three_working_days_not_the_policys_thirty() -> None:
    received = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # Tuesday
    spec = DEFAULT_KINDS[RequestKind.ACCESS]
    assert CALENDAR.local_date(spec.due_at(received, CALENDAR)) == date(2026, 11, 27)
    assert spec.running_clock(received, CALENDAR) == ClockSpec(3, W)


def test_a_complaint_runs_on_the_policys_thirty_calendar_days() -> None:
    received = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    due = DEFAULT_KINDS[RequestKind.COMPLAINT].due_at(received, CALENDAR)
    assert CALENDAR.local_date(due) == date(2026, 12, 24)


def test_withdrawal_needs_a_name_the_data_and_one_way_to_reach_the_person() -> None:
    spec = DEFAULT_KINDS[RequestKind.WITHDRAW_CONSENT]
    assert spec.missing_fields({}) == ["full_name", "data_concerned", "phone|email|postal_address"]
    assert spec.missing_fields(
        {"full_name": "Айгерим", "data_concerned": "all", "postal_address": "  "}
    ) == ["phone|email|postal_address"]
    assert spec.missing_fields({"full_name": "A", "data_concerned": "all", "email": "a@b.kz"}) == []


def test_a_complaint_needs_its_text() -> None:
    assert DEFAULT_KINDS[RequestKind.COMPLAINT].missing_fields({"text": ""}) == ["text"]
    assert DEFAULT_KINDS[RequestKind.ACCESS].missing_fields({}) == []


def _table() -> dict[str, Any]:
    text = resources.files("workflows").joinpath("kinds.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.pop("block"), "'block' is missing"),
        (lambda t: t.update(gossip={"law": {"length": 1, "unit": "working"}}), "unknown kind"),
        (lambda t: t["access"].update(law={"length": 0, "unit": "working"}), "access.law.length"),
        (lambda t: t["access"].update(law={"length": 3, "unit": "weeks"}), "access.law.unit"),
        (lambda t: t["complaint"].pop("policy"), "complaint: needs a law or a policy clock"),
        (lambda t: t["rectify"].update(starts="whenever"), "rectify.starts"),
        (lambda t: t["block"].update(required="text"), "block.required"),
        (lambda t: t["block"].update(questions=[{"field": "text"}]), "block.questions"),
        (lambda t: t["rectify"].update(evidence="yes"), "rectify.evidence"),
        (lambda t: t["rectify"].update(staff_input="guess"), "rectify.staff_input"),
        (lambda t: t["access"].update(four_eyes=1), "access.four_eyes"),
        (lambda t: t["unsubscribe"].update(at_once="yes"), "unsubscribe.at_once"),
        # Work done at once has nobody to approve it twice and nobody to type values.
        (lambda t: t["delete_account"].update(at_once=True), "delete_account.at_once"),
        (lambda t: t["rectify"].update(at_once=True), "rectify.at_once"),
        # Its clock is its likely kinds': a row of its own would be a second truth.
        (
            lambda t: t.update(unclassified={"law": {"length": 1, "unit": "working"}}),
            "'unclassified' takes no row",
        ),
    ],
)
def test_a_broken_table_is_refused_with_the_place_named(change: Any, words: str) -> None:
    table = _table()
    change(table)
    with pytest.raises(KindTableError, match=words):
        parse_kinds(table)


def test_the_table_has_every_kind_but_unclassified() -> None:
    assert set(DEFAULT_KINDS) == set(RequestKind) - {RequestKind.UNCLASSIFIED}
    assert set(CLASSIFIED_KINDS) == set(DEFAULT_KINDS)


def test_the_table_says_what_else_each_kind_needs() -> None:
    by = {kind.value: spec for kind, spec in DEFAULT_KINDS.items()}
    # Documents confirm a correction or an unlawful processing; staff then enter the
    # corrected values or the fields destroyed, and the answer to a complaint;
    # destructive kinds need two approvals.
    assert {k for k, s in by.items() if s.evidence} == {"rectify", "destroy_unlawful"}
    assert {k: s.staff_input for k, s in by.items() if s.staff_input} == {
        "rectify": "correct",
        "destroy_unlawful": "destroy",
        "complaint": "answer",
    }
    assert four_eyes_kinds(DEFAULT_KINDS) == {"delete_account", "destroy_unlawful"}
    assert {k for k, s in by.items() if s.preview} == {"access"}
    # Leaving mailings is done as soon as the person is verified, without staff.
    assert {k for k, s in by.items() if s.at_once} == {"unsubscribe"}
    assert [q.field for q in by["withdraw_consent"].questions] == [
        "full_name",
        "data_concerned",
        "contact",
    ]
    assert by["rectify"].question("correction") == "ask.correction"
    assert by["access"].questions == ()
