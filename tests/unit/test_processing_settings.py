"""DSR_PROCESSING_FILE: the operator's recipients, transfers and retention, checked at start.

A malformed file stops the desk, and ``aina-dsr check``, with one line naming
the setting and the problem (as DSR_CALENDAR_FILE does).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aina_dsr.runtime import processing_facts
from aina_dsr.settings import SettingsError, load_settings
from tests.cli_command import aina_dsr

BAD = "[[recipients]]\nname = 'Example Cloud GmbH'\nrole = 'processor'\ncountry = 'Germany'\n"
GOOD = "[[recipients]]\nname = 'Example Cloud GmbH'\nrole = 'processor'\ncountry = 'DE'\n"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DSR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_a_malformed_processing_file_is_named_with_its_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "processing.toml").write_text(BAD)
    monkeypatch.setenv("DSR_PROCESSING_FILE", "processing.toml")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == "DSR_PROCESSING_FILE"
    assert "country" in caught.value.problem


def test_a_missing_processing_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_PROCESSING_FILE", "no-such-file.toml")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == "DSR_PROCESSING_FILE"


def test_the_file_reaches_the_report_with_the_desks_retention(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "processing.toml").write_text(GOOD)
    monkeypatch.setenv("DSR_PROCESSING_FILE", "processing.toml")
    monkeypatch.setenv("DSR_RETENTION_DAYS", "400")

    facts = processing_facts(load_settings())

    assert [r.name["en"] for r in facts.recipients] == ["Example Cloud GmbH"]
    assert facts.desk_retention_days == 400


def test_without_a_file_the_policys_own_statements_are_used() -> None:
    facts = processing_facts(load_settings())

    assert facts.recipients == ()


def test_check_with_a_malformed_processing_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "processing.toml").write_text(BAD)

    result = aina_dsr(tmp_path, "check", DSR_PROCESSING_FILE="processing.toml")

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aina-dsr: DSR_PROCESSING_FILE: ")
    assert "country" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
