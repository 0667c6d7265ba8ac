"""The scheduler's settings: defaults as the issue sets them, and the errors operators get."""

from __future__ import annotations

import os
import shutil
from datetime import time
from pathlib import Path

import pytest

from aina_dsr.settings import SettingsError, load_settings
from tests.paths import REPO

EXAMPLE = REPO / ".env.example"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DSR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()

    assert settings.reminder_milestones == ("half", "3", "1", "0", "overdue")
    assert settings.deadline_near_days == 3
    assert settings.progress_every_days == 7
    assert settings.digest_time == time(9, 0)
    assert settings.quiet_days == "days_off"
    assert settings.scheduler_reconcile_seconds == 300
    assert settings.leader_retry_seconds == 15
    assert settings.verification_days == 14


def test_the_forms_operators_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_REMINDER_MILESTONES", " HALF, 5 ,0 ")
    monkeypatch.setenv("DSR_DIGEST_TIME", "08:30")
    monkeypatch.setenv("DSR_QUIET_DAYS", "None")

    settings = load_settings()

    assert settings.reminder_milestones == ("half", "5", "0")
    assert settings.digest_time == time(8, 30)
    assert settings.quiet_days == "none"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DSR_REMINDER_MILESTONES", "half,soon"),
        ("DSR_REMINDER_MILESTONES", "-1"),
        ("DSR_DIGEST_TIME", "25:00"),
        ("DSR_DIGEST_TIME", "09:00+05:00"),
        ("DSR_QUIET_DAYS", "weekends"),
        ("DSR_DEADLINE_NEAR_DAYS", "0"),
        ("DSR_PROGRESS_EVERY_DAYS", "0"),
        ("DSR_SCHEDULER_RECONCILE_SECONDS", "5"),
        ("DSR_LEADER_RETRY_SECONDS", "0"),
    ],
)
def test_a_wrong_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == variable


def test_the_example_file_documents_each_setting_and_reads_as_the_defaults(
    tmp_path: Path,
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for name in (
        "DSR_REMINDER_MILESTONES",
        "DSR_DEADLINE_NEAR_DAYS",
        "DSR_PROGRESS_EVERY_DAYS",
        "DSR_DIGEST_TIME",
        "DSR_QUIET_DAYS",
        "DSR_SCHEDULER_RECONCILE_SECONDS",
        "DSR_LEADER_RETRY_SECONDS",
    ):
        assert f"\n{name}=" in text, name
    shutil.copy(EXAMPLE, tmp_path / ".env")

    settings = load_settings()

    assert settings == load_settings(_env_file=None)
