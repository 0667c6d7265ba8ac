"""Settings: defaults, the forms operators write them in, and the errors they get."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from aina_dsr.settings import SettingsError, encryption_key_or_dev, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DSR_"):
            monkeypatch.delenv(name)
    # No .env of the developer's checkout leaks in: the working directory is empty.
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()

    assert settings.database_url == "sqlite+aiosqlite:///./aina-dsr.db"
    assert settings.is_sqlite
    assert settings.sqlite_path == Path("aina-dsr.db")
    assert settings.mail_from == "aina.app@mercury.kz"
    assert settings.timezone == "Asia/Almaty"
    assert settings.imap_security == "ssl"
    assert settings.imap_port == 993
    assert settings.imap_folder == "INBOX"
    assert settings.imap_poll_seconds == 60
    assert settings.smtp_security == "starttls"
    assert settings.smtp_port == 587
    assert settings.verification_days == 14
    assert settings.log_level == "INFO"
    assert settings.staff_user_ids == frozenset()
    assert settings.encryption_key is None
    assert not settings.dev_mode
    assert not settings.telegram_configured
    assert not settings.mail_configured
    assert settings.mail_authserv_id is None  # no Authentication-Results trusted


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/desk.db", "sqlite+aiosqlite:///data/desk.db"),
        ("sqlite:////var/lib/desk.db", "sqlite+aiosqlite:////var/lib/desk.db"),
        ("sqlite+aiosqlite:///desk.db", "sqlite+aiosqlite:///desk.db"),
        ("postgresql://desk:pw@db:5432/desk", "postgresql+asyncpg://desk:pw@db:5432/desk"),
        ("postgres://desk@db/desk", "postgresql+asyncpg://desk@db/desk"),
        ("postgresql+asyncpg://db/desk", "postgresql+asyncpg://db/desk"),
    ],
)
def test_database_urls_are_given_their_async_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DSR_DATABASE_URL", given)

    assert load_settings().database_url == expected


def test_postgresql_has_no_sqlite_path() -> None:
    settings = load_settings(database_url="postgresql://db/desk")

    assert not settings.is_sqlite
    assert settings.sqlite_path is None


def test_other_databases_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_DATABASE_URL", "mysql://root:hunter2@db/desk")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == "DSR_DATABASE_URL"
    assert "hunter2" not in str(caught.value)


def test_staff_user_ids_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_STAFF_USER_IDS", "1, 2,3")

    assert load_settings().staff_user_ids == frozenset({1, 2, 3})


def test_staff_user_ids_must_be_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_STAFF_USER_IDS", "1,@alice")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == "DSR_STAFF_USER_IDS"


def test_ports_follow_the_security_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_IMAP_SECURITY", "STARTTLS")
    monkeypatch.setenv("DSR_SMTP_SECURITY", "ssl")

    settings = load_settings()
    assert (settings.imap_security, settings.imap_port) == ("starttls", 143)
    assert (settings.smtp_security, settings.smtp_port) == ("ssl", 465)

    monkeypatch.setenv("DSR_SMTP_SECURITY", "none")
    monkeypatch.setenv("DSR_IMAP_PORT", "1143")
    settings = load_settings()
    assert settings.smtp_port == 25
    assert settings.imap_port == 1143


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # A copied .env.example leaves many variables empty.
    monkeypatch.setenv("DSR_STAFF_CHAT_ID", "")
    monkeypatch.setenv("DSR_IMAP_PORT", "")

    settings = load_settings()
    assert settings.staff_chat_id is None
    assert settings.imap_port == 993


def test_settings_are_read_from_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DSR_STAFF_CHAT_ID=-1001234\nDSR_TIMEZONE=UTC\n")

    settings = load_settings()
    assert settings.staff_chat_id == -1001234
    assert settings.timezone == "UTC"


def test_channels_count_as_configured_only_when_complete() -> None:
    assert not load_settings(telegram_bot_token="123:abc").telegram_configured
    assert load_settings(telegram_bot_token="123:abc", staff_chat_id=-100).telegram_configured

    mail = {"imap_host": "imap.example.kz", "imap_user": "desk", "imap_password": "pw"}
    assert not load_settings(**mail).mail_configured
    assert load_settings(**mail, smtp_host="smtp.example.kz").mail_configured


def test_a_bad_key_is_named_but_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_ENCRYPTION_KEY", "not-a-key-sekrit")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == "DSR_ENCRYPTION_KEY"
    assert "not-a-key-sekrit" not in str(caught.value)
    assert "aina-dsr keys generate" in caught.value.problem


def test_a_good_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("DSR_ENCRYPTION_KEY", key)

    assert encryption_key_or_dev(load_settings()) == key


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Asia", "asia/almaty", ""])
def test_a_bad_timezone_is_refused(monkeypatch: pytest.MonkeyPatch, zone: str) -> None:
    monkeypatch.setenv("DSR_TIMEZONE", zone or " ")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == "DSR_TIMEZONE"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DSR_IMAP_POLL_SECONDS", "1"),
        ("DSR_IMAP_POLL_SECONDS", "86400"),
        ("DSR_IMAP_SECURITY", "tls"),
        ("DSR_MAIL_FROM", "not an address"),
        ("DSR_STAFF_CHAT_ID", "the staff group"),
        ("DSR_CALENDAR_FILE", "no-such-calendar.toml"),
        ("DSR_TELEGRAM_API_URL", "localhost:8081"),
        ("DSR_LOG_LEVEL", "chatty"),
        ("DSR_MAIL_AUTHSERV_ID", "mx.mercury.kz; dmarc=pass"),
    ],
)
def test_a_wrong_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == variable
    assert caught.value.problem


def test_the_calendar_file_is_accepted_when_it_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "calendar.toml").write_text("")
    monkeypatch.setenv("DSR_CALENDAR_FILE", "calendar.toml")

    assert load_settings().calendar_file == Path("calendar.toml")


def test_a_malformed_calendar_file_is_named_with_its_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "calendar.toml").write_text('working_days = ["19 December"]\n')
    monkeypatch.setenv("DSR_CALENDAR_FILE", "calendar.toml")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == "DSR_CALENDAR_FILE"
    assert "working_days" in caught.value.problem
    assert "2026-12-19" in caught.value.problem  # it shows what a date looks like


def test_without_a_key_and_without_dev_mode_the_desk_refuses() -> None:
    with pytest.raises(SettingsError) as caught:
        encryption_key_or_dev(load_settings())

    assert caught.value.variable == "DSR_ENCRYPTION_KEY"
    assert "DSR_DEV_MODE" in caught.value.problem
    assert not Path("dsr-dev.key").exists()


def test_dev_mode_makes_a_private_key_file_once_and_reuses_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DSR_DEV_MODE", "true")

    first = encryption_key_or_dev(load_settings())
    second = encryption_key_or_dev(load_settings())

    key_file = tmp_path / "dsr-dev.key"
    assert first == second == key_file.read_text().strip()
    Fernet(first.encode())
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "DEVELOPMENT MODE" in caplog.text


def test_a_real_key_wins_over_dev_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("DSR_DEV_MODE", "true")
    monkeypatch.setenv("DSR_ENCRYPTION_KEY", key)

    assert encryption_key_or_dev(load_settings()) == key
    assert not (tmp_path / "dsr-dev.key").exists()


def test_a_webhook_secret_is_checked_against_telegrams_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DSR_TELEGRAM_WEBHOOK_SECRET", "good_Secret-123")
    assert load_settings().webhook_secret() == "good_Secret-123"
    monkeypatch.setenv("DSR_TELEGRAM_WEBHOOK_SECRET", "no spaces!")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.variable == "DSR_TELEGRAM_WEBHOOK_SECRET"
    assert "no spaces" not in caught.value.problem  # a secret is never echoed


def test_a_dialog_in_redis_lives_two_weeks_untouched_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().dialog_ttl_hours == 336
    monkeypatch.setenv("DSR_DIALOG_TTL_HOURS", "48")
    assert load_settings().dialog_ttl_hours == 48


@pytest.mark.parametrize(("hours", "days"), [("0", "1095"), ("721", "30"), ("many", "1095")])
def test_a_dialog_ttl_outside_one_hour_to_the_retention_period_is_refused(
    monkeypatch: pytest.MonkeyPatch, hours: str, days: str
) -> None:
    # Redis forgets a dialog by its TTL alone: longer than retention, it would outlive it.
    monkeypatch.setenv("DSR_DIALOG_TTL_HOURS", hours)
    monkeypatch.setenv("DSR_RETENTION_DAYS", days)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert caught.value.variable == "DSR_DIALOG_TTL_HOURS"
    assert caught.value.problem


def test_a_dialog_ttl_of_the_whole_retention_period_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DSR_DIALOG_TTL_HOURS", "720")
    monkeypatch.setenv("DSR_RETENTION_DAYS", "30")
    assert load_settings().dialog_ttl_hours == 720


def test_the_authorised_body_comes_from_the_settings_in_each_language(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aina_dsr.runtime import desk_info
    from workflows.i18n import render_notification

    monkeypatch.setenv("DSR_AUTHORITY_NAME_EN", "the Personal Data Protection Committee")
    monkeypatch.setenv("DSR_AUTHORITY_ADDRESS_EN", "8 Mangilik El Ave, Astana")
    monkeypatch.setenv("DSR_AUTHORITY_NAME_RU", "")  # empty: today's name stays
    info = desk_info(load_settings())
    params = {"reference": "DSR-1", "kind": "access", "due_date": "2026-12-17"}

    overdue = render_notification("deadline_missed", "en", params, context=info.context("en"))
    assert "- the Personal Data Protection Committee (8 Mangilik El Ave, Astana);" in overdue.text
    assert "Artificial Intelligence" not in overdue.text
    # A language the settings leave out keeps today's name and where it takes appeals.
    russian = render_notification("deadline_missed", "ru", params, context=info.context("ru"))
    assert "Министерство искусственного интеллекта и цифрового развития" in russian.text
    assert "eotinish.kz" in russian.text
