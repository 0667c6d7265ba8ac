"""The command answers plainly: its version, the whole reference, a mistyped setting named."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cli_command import aina_dsr, aina_dsr_here
from tests.clocks import FrozenClock
from workflows.requests.service import RequestService

SECRET = "s3cr3t-value-never-shown"


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    result = aina_dsr(tmp_path, "--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"aina-dsr {version('aina-privacy-desk')}"


@pytest.mark.parametrize("columns", ["40", "80", "200"])
async def test_the_reference_is_never_cut_whatever_the_width(
    service: RequestService,
    clock: FrozenClock,
    engine: AsyncEngine,
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
    columns: str,
) -> None:
    clock.set(datetime(2026, 1, 5, 4, 0, tzinfo=UTC))
    references = []
    for kind, user in (("withdraw_consent", 1), ("access", 2), ("complaint", 3)):
        view = await service.open_request(
            kind=kind, channel="telegram", language="kk", telegram_user_id=user
        )
        references.append(view.reference)

    # stdout is a pipe here (capture_output): the command cannot ask the terminal.
    result = aina_dsr_here(
        tmp_path,
        "requests",
        "list",
        COLUMNS=columns,
        DSR_DATABASE_URL=database_url,
        DSR_ENCRYPTION_KEY=encryption_key,
    )

    assert result.returncode == 0, result.stderr
    found = re.findall(r"DSR-\d{4}-\d+", result.stdout)
    assert sorted(found) == sorted(references), result.stdout
    assert "…" not in "".join(line for line in result.stdout.splitlines() if "DSR-" in line)
    # The other columns are there too, wrapped if need be, not dropped.
    assert "withdraw_consent" in result.stdout and "complaint" in result.stdout, result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= int(columns)


def _settings(tmp_path: Path) -> dict[str, str]:
    return {
        "DSR_DATABASE_URL": f"sqlite:///{tmp_path / 'desk.db'}",
        "DSR_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }


def test_check_warns_of_a_mistyped_variable_without_its_value(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DSR_SMTP_PASWORD={SECRET}\n", encoding="utf-8")

    result = aina_dsr_here(
        tmp_path,
        "check",
        DSR_IMAP_HOTS=SECRET,
        DSR_TEST_DATABASE_URL="postgresql://tests/own",
        **_settings(tmp_path),
    )

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "not a setting" in line]
    assert warnings == [
        "aina-dsr: warning: DSR_IMAP_HOTS is not a setting and is ignored; "
        "did you mean DSR_IMAP_HOST?",
        "aina-dsr: warning: DSR_SMTP_PASWORD (in .env) is not a setting and is ignored; "
        "did you mean DSR_SMTP_PASSWORD?",
    ]
    assert SECRET not in result.stdout + result.stderr
    assert "DSR_TEST_DATABASE_URL" not in result.stdout + result.stderr


def test_run_warns_at_start_before_anything_else(tmp_path: Path) -> None:
    result = aina_dsr(tmp_path, "run", DSR_TELGRAM_BOT_TOKEN=SECRET, **_settings(tmp_path))

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "aina-dsr: warning: DSR_TELGRAM_BOT_TOKEN is not a setting and is ignored; "
        "did you mean DSR_TELEGRAM_BOT_TOKEN?"
    )
    assert "no channel is configured" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_name_like_no_setting_is_warned_without_a_guess(tmp_path: Path) -> None:
    result = aina_dsr_here(tmp_path, "check", DSR_ZZZ=SECRET, **_settings(tmp_path))

    assert (
        "aina-dsr: warning: DSR_ZZZ is not a setting and is ignored" in result.stderr.splitlines()
    )
