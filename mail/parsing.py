"""One raw letter to a :class:`ParsedMail`: headers decoded, the body as text, the files.

Parsing never raises: a letter the email package cannot make sense of still
gives what could be read, with ``problems`` saying what went wrong. Whether
such a letter can be acted on is the intake's decision, not the parser's.

The sender's address is read from the raw From header, before any decoding:
only its addr-spec is an address. An encoded-word (RFC 2047) is decoded for
the display name alone, so ``=?utf-8?q?victim=40example.kz?= <mallory@...>``
is Mallory, and a name that decodes to a line break and ``Bcc:`` is a name.
"""

from __future__ import annotations

import email
import hashlib
import re
from dataclasses import dataclass, field
from email.header import decode_header
from email.message import Message
from typing import Any

from mail.decoding import decode_bytes, html_to_text
from mail.quoting import split_reply
from workflows.identity import InvalidEmail, normalize_email

MAX_SUBJECT = 500
MAX_TEXT = 20_000
_MAX_HEADERS = 200
_BROKEN_MIME_LINES = re.compile(
    r"^(--\S+|content-[\w-]+:.*|mime-version:.*)\r?$", re.IGNORECASE | re.MULTILINE
)
_MSGID = re.compile(r"<[^<>\s]{1,900}>")


@dataclass(frozen=True)
class MailFile:
    """A file attached to a letter."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ParsedMail:
    """What a letter says, decoded; see the module docstring."""

    mail_key: str
    message_id: str | None
    thread_ids: tuple[str, ...]
    sender: str | None
    sender_name: str
    subject: str
    text: str
    quoted: str
    files: tuple[MailFile, ...]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/plain"
    content_language: str | None = None
    problems: tuple[str, ...] = ()
    # The raw Authentication-Results headers, topmost first (see mail.authentication).
    authentication_results: tuple[str, ...] = ()


def mail_key(raw: bytes, message_id: str | None) -> str:
    """The dedupe key: a hash of the Message-ID, or of the content when there is none."""
    if message_id:
        return hashlib.sha256(b"mid:" + message_id.encode("utf-8", "replace")).hexdigest()
    return hashlib.sha256(b"raw:" + raw).hexdigest()


def decode_header_value(value: Any) -> str:
    """A header as text: RFC 2047 words, raw 8-bit bytes and wrong labels all read."""
    if value is None:
        return ""
    try:
        chunks = decode_header(value)
    except Exception:
        return _clean(str(value))
    parts: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            parts.append(decode_bytes(chunk, charset if charset != "unknown-8bit" else None))
        else:
            parts.append(chunk)
    return _clean("".join(parts))


def _clean(text: str) -> str:
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()


def _header(message: Message, name: str) -> str:
    try:
        return decode_header_value(message.get(name))
    except Exception:
        return ""


def _ids(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_MSGID.findall(value)))


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        return None
    return decode_header_value(name)[:200] or "attachment"


def _walk(message: Message, limit: int = 500) -> list[Message]:
    parts: list[Message] = []
    stack = [message]
    while stack and len(parts) < limit:
        part = stack.pop(0)
        parts.append(part)
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
    return parts


def _parse(raw: bytes) -> ParsedMail:
    problems: list[str] = []
    try:
        message = email.message_from_bytes(raw)
    except Exception as exc:  # the stdlib parser is lenient, but be sure
        problems.append(f"unreadable: {type(exc).__name__}")
        message = Message()
    for defect in getattr(message, "defects", [])[:5]:
        problems.append(type(defect).__name__)

    message_id_values = _ids(_header(message, "Message-ID"))
    message_id = message_id_values[0] if message_id_values else None
    thread_ids = _ids(_header(message, "In-Reply-To") + " " + _header(message, "References"))

    # Only From: the code proves that mailbox; a Reply-To could name anyone's.
    froms = _raw_headers(message, "From")
    sender, sender_name = _sender(froms[0]) if len(froms) == 1 else (None, "")
    if not froms:
        problems.append("no From header")
    elif sender is None:
        problems.append("bad From address")
    from_header = _clean(froms[0]) if froms else ""

    subject = _header(message, "Subject")
    if len(subject) > MAX_SUBJECT:
        problems.append("subject too long")
        subject = subject[:MAX_SUBJECT]

    # Every header's first value (decoded, cut short): the machine-mail checks and the
    # mail server's verdicts (spam headers are a setting) read what they need from here.
    headers: dict[str, str] = {}
    for name in message.keys()[:_MAX_HEADERS]:
        key = name.lower()
        if key not in headers:
            headers[key] = _header(message, name)[:500]
    headers["from"] = from_header[:500]
    content_type = (message.get_content_type() or "text/plain").lower()
    language_header = _header(message, "Content-Language") or None

    plain: list[str] = []
    html: list[str] = []
    files: list[MailFile] = []
    for part in _walk(message):
        try:
            _read_part(part, plain, html, files)
        except Exception as exc:  # one broken part must not cost the rest of the letter
            problems.append(f"unreadable part: {type(exc).__name__}")
    body = "\n\n".join(plain) if any(p.strip() for p in plain) else ""
    if not body and html:
        body = "\n\n".join(html_to_text(h) for h in html)
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    if len(body) > 4 * MAX_TEXT:
        problems.append("body truncated")
        body = body[: 4 * MAX_TEXT]
    own, quoted = split_reply(body)
    return ParsedMail(
        mail_key=mail_key(raw, message_id),
        message_id=message_id,
        thread_ids=thread_ids,
        sender=sender,
        sender_name=sender_name,
        subject=subject,
        text=own[:MAX_TEXT],
        quoted=quoted[:MAX_TEXT],
        files=tuple(files),
        headers=headers,
        content_type=content_type,
        content_language=language_header,
        problems=tuple(problems),
        authentication_results=tuple(
            _clean(value)[:2000] for value in _raw_headers(message, "Authentication-Results")[:20]
        ),
    )


def _raw_headers(message: Message, name: str) -> list[str]:
    """Every ``name`` header as written, unfolded, 8-bit bytes read as text, nothing decoded."""
    values: list[str] = []
    for key, value in message.raw_items():
        if key.lower() == name.lower() and isinstance(value, str):
            data = value.encode("ascii", "surrogateescape")
            values.append(re.sub(r"\r?\n(?=[ \t])", "", decode_bytes(data)))
    return values


def _sender(raw: str) -> tuple[str | None, str]:
    """``(address, display name)`` from a raw From header; no address unless one addr-spec."""
    mailbox = split_mailbox(raw)
    if mailbox is None:
        return None, ""
    name, address = mailbox
    display = _clean(decode_header_value(name))[:200]
    # What stands between the angle brackets is the address; it is never decoded, and
    # whitespace or control characters in it make it no address at all.
    if not address or re.search(r"[\s\x00-\x1f\x7f]", address):
        return None, display
    try:
        return normalize_email(address), display
    except InvalidEmail:
        return None, display


def split_mailbox(raw: str) -> tuple[str, str] | None:
    """``(display name as written, addr-spec)`` of a header holding exactly one mailbox.

    RFC 5322's ``name-addr`` (``Name <a@b>``) or bare ``addr-spec`` (``a@b (Name)``),
    with quoted strings and comments skipped over; a list, a group, a second or an
    unclosed angle bracket give ``None``.
    """
    outside: list[str] = []  # the display name, or the bare addr-spec
    inside: list[str] = []  # the angle-addr's content
    comment: list[str] = []
    where = "before"  # before the angle-addr, inside it, after it
    depth, quoted, escaped = 0, False, False
    for char in raw:
        target = inside if where == "inside" else outside
        if escaped:
            (comment if depth else target).append(char)
            escaped = False
        elif depth:
            escaped = char == "\\"
            depth += {"(": 1, ")": -1}.get(char, 0)
            comment.append(char if depth else " ")
        elif quoted:
            target.append(char)
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            if where == "after":
                return None
            target.append(char)
            quoted = True
        elif char == "(":
            depth = 1
        elif where == "inside":
            if char == ">":
                where = "after"
            elif char == "<":
                return None
            else:
                inside.append(char)
        elif char in "<>,;:" or (where == "after" and not char.isspace()):
            if char != "<" or where != "before":
                return None
            where = "inside"
        elif where == "before":
            outside.append(char)
    if depth or quoted or where == "inside":
        return None
    if where == "after":
        return _unquote("".join(outside).strip()), "".join(inside).strip()
    return _unquote("".join(comment).strip()), "".join(outside).strip()


def _unquote(phrase: str) -> str:
    if len(phrase) >= 2 and phrase[0] == phrase[-1] == '"':
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return phrase


def _read_part(part: Message, plain: list[str], html: list[str], files: list[MailFile]) -> None:
    if part.is_multipart():
        return
    kind = (part.get_content_type() or "text/plain").lower()
    disposition = str(part.get("Content-Disposition") or "").lower()
    filename = _filename(part)
    is_file = filename is not None or "attachment" in disposition
    if kind.startswith("multipart/"):
        # A multipart whose boundary was never found: its parts are plain text to us.
        text = decode_bytes(_payload(part), part.get_content_charset())
        plain.append(_BROKEN_MIME_LINES.sub("", text))
    elif kind == "message/rfc822" or (not is_file and kind.startswith("text/")):
        data = _payload(part)
        text = decode_bytes(data, part.get_content_charset())
        if kind == "text/html":
            html.append(text)
        else:
            plain.append(text)
    else:
        files.append(
            MailFile(
                filename=filename or "attachment",
                content_type=kind[:200],
                data=_payload(part),
            )
        )


def parse_mail(raw: bytes) -> ParsedMail:
    """Read ``raw``; never raises (see the module docstring)."""
    try:
        return _parse(raw)
    except Exception as exc:  # the letter is kept raw and quarantined by the intake
        return ParsedMail(
            mail_key=mail_key(raw, None),
            message_id=None,
            thread_ids=(),
            sender=None,
            sender_name="",
            subject="",
            text="",
            quoted="",
            files=(),
            problems=(f"unreadable: {type(exc).__name__}",),
        )
