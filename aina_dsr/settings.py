"""Settings of a deployment, read from ``DSR_*`` environment variables or ``.env``."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet
from pydantic import (
    EmailStr,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mail.spam import DEFAULT_SPAM_HEADERS
from workflows.deadlines.calendar import CalendarFileError, WorkingCalendar
from workflows.deadlines.milestones import (
    DEFAULT_STAFF_MILESTONES,
    MilestoneError,
    parse_staff_milestones,
)
from workflows.fulfilment.processing import ProcessingFacts, ProcessingFileError
from workflows.i18n import DEFAULT_MAIL_ADDRESS, DEFAULT_POLICY_URL, LANGUAGES
from workflows.kinds import CLASSIFIED_KINDS, DEFAULT_KINDS
from workflows.kinds import four_eyes_kinds as four_eyes_in_table
from workflows.privacy.retention import DEFAULT_DIALOG_TTL_HOURS, DEFAULT_RETENTION_DAYS

log = logging.getLogger(__name__)

ENV_PREFIX = "DSR_"
DEV_KEY_FILE = Path("dsr-dev.key")

Security = Literal["ssl", "starttls", "none"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_IMAP_PORTS: dict[str, int] = {"ssl": 993, "starttls": 143, "none": 143}
_SMTP_PORTS: dict[str, int] = {"ssl": 465, "starttls": 587, "none": 25}


class SettingsError(Exception):
    """A setting is missing or wrong; ``variable`` is its ``DSR_*`` name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _normalise_database_url(url: str) -> str:
    # Operators paste the URLs their database tools print; the desk needs the async drivers.
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("is not a database URL (expected sqlite:///FILE or postgresql://...)")
    drivers = {
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
    }
    driver = drivers.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"scheme {scheme!r} is not supported (use sqlite:///FILE or postgresql://...)"
        )
    normalised = f"{driver}://{rest}"
    try:
        make_url(normalised)
    except ArgumentError:
        raise ValueError("is not a valid database URL") from None
    return normalised


class Settings(BaseSettings):
    """Everything a deployment configures; see ``.env.example`` for each variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
    )

    # Database
    database_url: str = "sqlite+aiosqlite:///./aina-dsr.db"

    # Security
    encryption_key: SecretStr | None = None
    dev_mode: bool = False

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str | None = None
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = Field(default="127.0.0.1:8080", pattern=r"^[^:\s]+:\d{1,5}$")
    staff_chat_id: int | None = None
    staff_user_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    staff_language: Literal["kk", "ru", "en"] = "ru"
    policy_url: str = DEFAULT_POLICY_URL
    # The authorised body for personal data protection, as refusals, complaint answers, the
    # overdue notice, /privacy and the access report name it; unset: today's name (catalogue).
    authority_name_kk: str | None = Field(default=None, min_length=3)
    authority_name_ru: str | None = Field(default=None, min_length=3)
    authority_name_en: str | None = Field(default=None, min_length=3)
    authority_address_kk: str | None = Field(default=None, min_length=3)
    authority_address_ru: str | None = Field(default=None, min_length=3)
    authority_address_en: str | None = Field(default=None, min_length=3)

    # E-mail in
    imap_host: str | None = None
    imap_port: int | None = Field(default=None, ge=1, le=65535)
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_security: Security = "ssl"
    imap_folder: str = "INBOX"
    imap_poll_seconds: int = Field(default=60, ge=5, le=3600)
    imap_processed_folder: str | None = None
    mail_max_attachment_mb: int = Field(default=10, ge=1, le=100)
    # The mail server's spam verdict: header name -> values (prefixes, any case) that mean spam.
    mail_spam_headers: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_SPAM_HEADERS.items()}
    )
    # Our mail server's authserv-id: only its Authentication-Results are read (DMARC).
    mail_authserv_id: str | None = Field(default=None, pattern=r"^[^\s;()\"\\]+$")
    # Letters fetched and stored together hold at most this much; a bigger letter goes alone.
    mail_chunk_mb: int = Field(default=20, ge=1, le=1000)
    # A letter over this is never fetched whole: recorded by its headers, staff told.
    mail_max_letter_mb: int = Field(default=25, ge=1, le=1000)

    # E-mail out
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Security = "starttls"
    mail_from: EmailStr = DEFAULT_MAIL_ADDRESS

    # Calendar and clocks
    timezone: str = "Asia/Almaty"
    calendar_file: Path | None = None
    verification_days: int = Field(default=14, ge=1, le=365)

    # Deadlines and reminders (the scheduler)
    reminder_milestones: Annotated[tuple[str, ...], NoDecode] = DEFAULT_STAFF_MILESTONES
    deadline_near_days: int = Field(default=3, ge=1, le=60)
    progress_every_days: int = Field(default=7, ge=1, le=366)
    digest_time: time = time(9, 0)
    quiet_days: Literal["days_off", "none"] = "days_off"
    scheduler_reconcile_seconds: int = Field(default=300, ge=30, le=3600)
    # How often a replica that does not lead tries for the scheduler's and the mailbox's
    # lock, and the leader checks it still holds it (PostgreSQL; SQLite has one process).
    leader_retry_seconds: int = Field(default=15, ge=1, le=300)

    # Fulfilment
    four_eyes_kinds: Annotated[frozenset[str], NoDecode] = four_eyes_in_table(DEFAULT_KINDS)
    approvals_needed: int = Field(default=2, ge=1, le=5)
    # Recipients, processors, their countries and retention per category, which the access
    # report names (TOML, workflows.fulfilment.processing); without it, the policy's words.
    processing_file: Path | None = None

    # Retention: days a closed request keeps more than its evidence (workflows.privacy.retention).
    retention_days: int = Field(default=DEFAULT_RETENTION_DAYS, ge=30, le=36500)
    # Hours a dialog in Redis lives untouched (bot.redis_storage); at most the retention period.
    dialog_ttl_hours: int = Field(default=DEFAULT_DIALOG_TTL_HOURS, ge=1, le=36500 * 24)
    # The audit chain's daily checkpoints, outside the database (privacy.audit_checkpoint).
    audit_checkpoint_file: Path | None = None

    # Limits per person and chat (see workflows.requests.limits, bot.throttle, mail.intake).
    limit_open_requests: int = Field(default=5, ge=1, le=100)
    limit_messages_per_minute: int = Field(default=20, ge=1, le=600)
    limit_codes_per_hour: int = Field(default=3, ge=1, le=60)
    limit_mail_per_sender_per_hour: int = Field(default=20, ge=1, le=10000)
    # Acknowledgements to e-mail addresses nobody has verified, per mailbox and in all.
    limit_acks_per_mailbox_per_hour: int = Field(default=3, ge=1, le=1000)
    limit_acks_per_hour: int = Field(default=300, ge=1, le=100000)

    # Scale and misc
    redis_url: str | None = None
    log_level: LogLevel = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Observability: /metrics and /healthz are served only when a port is given.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return _normalise_database_url(value.strip())

    @field_validator("staff_user_ids", mode="before")
    @classmethod
    def _staff_user_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",")]
            try:
                return frozenset(int(part) for part in parts if part)
            except ValueError:
                raise ValueError(
                    "must be Telegram user ids separated by commas, e.g. 12345,67890"
                ) from None
        return value

    @field_validator("four_eyes_kinds", mode="before")
    @classmethod
    def _four_eyes_kinds(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.strip().lower() in ("none", "off"):
            return frozenset()
        names = {part.strip().lower() for part in value.split(",") if part.strip()}
        known = {kind.value for kind in CLASSIFIED_KINDS}
        if names - known:
            raise ValueError(
                f"unknown kind {sorted(names - known)[0]!r}; kinds: {', '.join(sorted(known))},"
                " or none"
            )
        return frozenset(names)

    @field_validator("reminder_milestones", mode="before")
    @classmethod
    def _reminder_milestones(cls, value: Any) -> Any:
        if isinstance(value, str | list | tuple):
            try:
                return parse_staff_milestones(value)
            except MilestoneError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("digest_time")
    @classmethod
    def _digest_time(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("give a local time such as 09:00, without an offset")
        return value

    @field_validator("quiet_days", mode="before")
    @classmethod
    def _quiet_days(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("imap_security", "smtp_security", mode="before")
    @classmethod
    def _security(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"{value!r} is not a time zone name such as Asia/Almaty") from None
        return value

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        # Several keys, comma-separated, while a rotation runs: the first encrypts, all decrypt.
        if value is None:
            return None
        keys = [part.strip() for part in value.get_secret_value().split(",")]
        keys = [key for key in keys if key]
        if not keys:
            return None
        for key in keys:
            try:
                Fernet(key.encode())
            except (ValueError, TypeError):
                raise ValueError(
                    "is not a valid key (32 random bytes, url-safe base64); "
                    "generate one with `aina-dsr keys generate`"
                ) from None
        if len(set(keys)) != len(keys):
            raise ValueError("names the same key twice")
        return SecretStr(",".join(keys))

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram accepts 1-256 characters A-Z, a-z, 0-9, _ and -.
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()
        ):
            raise ValueError("use 1 to 256 letters, digits, _ or - (Telegram's rule)")
        return value

    @field_validator("calendar_file")
    @classmethod
    def _calendar_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        if value is not None:
            try:
                WorkingCalendar.from_file(value)
            except CalendarFileError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("processing_file")
    @classmethod
    def _processing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        try:
            ProcessingFacts.from_file(value)
        except ProcessingFileError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("audit_checkpoint_file")
    @classmethod
    def _audit_checkpoint_file(cls, value: Path | None) -> Path | None:
        # The file itself appears with the first checkpoint; where it goes must exist.
        if value is not None and (value.is_dir() or not value.parent.is_dir()):
            raise ValueError(f"{str(value)!r} is not a file in an existing directory")
        return value

    @field_validator("telegram_api_url", "telegram_webhook_url", "policy_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("dialog_ttl_hours")
    @classmethod
    def _dialog_within_retention(cls, value: int, info: ValidationInfo) -> int:
        # Redis forgets a dialog by its TTL alone: a longer one would outlive retention.
        days = info.data.get("retention_days")
        if isinstance(days, int) and value > days * 24:
            raise ValueError(f"must be at most DSR_RETENTION_DAYS in hours ({days * 24})")
        return value

    @model_validator(mode="after")
    def _default_ports(self) -> Settings:
        if self.imap_port is None:
            self.imap_port = _IMAP_PORTS[self.imap_security]
        if self.smtp_port is None:
            self.smtp_port = _SMTP_PORTS[self.smtp_security]
        return self

    @property
    def telegram_configured(self) -> bool:
        """A bot token and a staff group: enough to run the Telegram channel."""
        return self.telegram_bot_token is not None and self.staff_chat_id is not None

    def webhook_secret(self) -> str:
        """The secret Telegram sends with each webhook call: the setting, or one derived
        from the bot token, so every replica agrees without another setting."""
        if self.telegram_webhook_secret is not None:
            return self.telegram_webhook_secret.get_secret_value()
        token = self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else ""
        return hashlib.sha256(b"aina-dsr webhook\x00" + token.encode()).hexdigest()

    @property
    def mail_configured(self) -> bool:
        """A mailbox to read and a server to send through: enough to run the e-mail channel."""
        return (
            self.imap_host is not None
            and self.imap_user is not None
            and self.imap_password is not None
            and self.smtp_host is not None
        )

    def authority_names(self) -> dict[str, str]:
        """The authorised body's name per language, for the languages the settings give."""
        return self._per_language("authority_name")

    def authority_addresses(self) -> dict[str, str]:
        """Where the authorised body takes appeals, per language the settings give."""
        return self._per_language("authority_address")

    def _per_language(self, prefix: str) -> dict[str, str]:
        values = {language: getattr(self, f"{prefix}_{language}") for language in LANGUAGES}
        return {language: value.strip() for language, value in values.items() if value}

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file on SQLite; ``None`` on PostgreSQL or an in-memory database."""
        if not self.is_sqlite:
            return None
        database = make_url(self.database_url).database
        if not database or database == ":memory:":
            return None
        return Path(database)


def _reason(error: Any) -> str:
    message = str(error.get("msg", "is not valid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message[:1].lower() + message[1:]


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a wrong one raises :class:`SettingsError` naming its variable.

    Only the first problem is reported, and never with the value that was given:
    values may be passwords or keys.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}", _reason(first)) from None
    except PydanticSettingsError as exc:
        # Raised before validation when a value cannot even be parsed.
        message = str(exc)
        for name in Settings.model_fields:
            if f'"{name}"' in message:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()}", "cannot be parsed") from None
        raise SettingsError("settings", "cannot be parsed") from None


def encryption_keys_or_dev(settings: Settings) -> tuple[str, ...]:
    """The encryption keys, current first, then older ones still read during a rotation."""
    return tuple(encryption_key_or_dev(settings).split(","))


def encryption_key_or_dev(settings: Settings) -> str:
    """The encryption key setting (comma-separated keys while rotating), or in
    development mode a local key file made on first use."""
    if settings.encryption_key is not None:
        return settings.encryption_key.get_secret_value()
    if not settings.dev_mode:
        raise SettingsError(
            "DSR_ENCRYPTION_KEY",
            "is required; generate one with `aina-dsr keys generate` "
            "(or set DSR_DEV_MODE=true for local development)",
        )
    path = DEV_KEY_FILE.absolute()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text(encoding="ascii").strip()
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise SettingsError(
                "DSR_ENCRYPTION_KEY", f"development key file {path} does not hold a valid key"
            ) from None
    else:
        key = Fernet.generate_key().decode()
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(key + "\n")
    _warn_dev_mode(path)
    return key


@functools.cache
def _warn_dev_mode(path: Path) -> None:
    # Once per process: every part that needs the key asks for it.
    log.warning(
        "DEVELOPMENT MODE: personal data is encrypted with the throw-away key in %s. "
        "Never use DSR_DEV_MODE in production: set DSR_ENCRYPTION_KEY instead.",
        path,
    )
