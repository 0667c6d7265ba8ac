"""What the e-mail channel is told by the composition root: where the mail is, and its limits."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from workflows.requests.mail_caps import (
    DEFAULT_ACKS_IN_TOTAL,
    DEFAULT_ACKS_PER_MAILBOX,
    DEFAULT_LETTERS_PER_SENDER,
)

Security = Literal["ssl", "starttls", "none"]

MB = 1024 * 1024
DEFAULT_MAX_ATTACHMENT = 10 * MB
DEFAULT_MAX_LETTER = 25 * MB
DEFAULT_CHUNK_BYTES = 20 * MB


@dataclass(frozen=True)
class MailSettings:
    """The e-mail channel's settings, as plain values (``aina_dsr`` reads them from the env).

    ``authserv_id`` names our own mail server in Authentication-Results (see
    :mod:`mail.authentication`); without it no such header is trusted.
    ``spam_headers`` maps a header to the values (prefixes) that mean spam;
    without it :class:`mail.spam.SpamRules` decides with its defaults.
    """

    imap_host: str
    imap_port: int
    imap_user: str
    imap_password: str
    smtp_host: str
    smtp_port: int
    mail_from: str
    imap_security: Security = "ssl"
    imap_folder: str = "INBOX"
    processed_folder: str | None = None
    poll_seconds: float = 60.0
    # A replica that does not read the mailbox tries for its lock this often (PostgreSQL).
    lock_seconds: float = 15.0
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_security: Security = "starttls"
    timeout: float = 30.0
    imap_ssl_context: ssl.SSLContext | None = None
    smtp_ssl_context: ssl.SSLContext | None = None
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT
    max_per_sender_per_hour: int = DEFAULT_LETTERS_PER_SENDER
    max_acks_per_mailbox_per_hour: int = DEFAULT_ACKS_PER_MAILBOX
    max_acks_per_hour: int = DEFAULT_ACKS_IN_TOTAL
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_letter_bytes: int = DEFAULT_MAX_LETTER
    authserv_id: str | None = None
    spam_headers: Mapping[str, Sequence[str]] | None = None
