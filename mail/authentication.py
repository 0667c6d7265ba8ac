"""What our own mail server found out about a letter's sender: its Authentication-Results.

A receiving server records its SPF, DKIM and DMARC checks in an
``Authentication-Results`` header (RFC 8601) naming itself by its
authserv-id. Anyone can write such a header into a letter, so only those
whose authserv-id is our server's own (``DSR_MAIL_AUTHSERV_ID``) are read;
without that setting none is. When one of ours says ``dmarc=fail``, the
From address is not the sender's: the letter is not answered. A forged
``dmarc=pass`` beside it changes nothing (a fail from our server wins),
which also covers a server that does not strip look-alike headers on the
way in, as RFC 8601 section 5 asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_KEYWORD = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*(?:/\s*\d+\s*)?=\s*([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class AuthResults:
    """One Authentication-Results header: who wrote it and each method's result."""

    authserv_id: str
    results: tuple[tuple[str, str], ...]  # (method, result), lower-cased, in order


def _without_comments(value: str) -> list[str]:
    """The header's ``;``-separated parts, comments dropped and quoted strings kept whole."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            if not depth:
                current.append(char)
            escaped = False
        elif char == "\\" and (depth or quoted):
            escaped = True
            if quoted:
                current.append(char)
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if not depth:
                current.append(" ")
        elif quoted:
            current.append(char)
            quoted = char != '"'
        elif char == '"':
            current.append(char)
            quoted = True
        elif char == "(":
            depth = 1
        elif char == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_authentication_results(value: str) -> AuthResults | None:
    """One header's value read as RFC 8601 says; ``None`` when it names no authserv-id."""
    head, *resinfos = _without_comments(value)
    words = head.split()
    if not words:
        return None
    authserv_id = words[0]
    if len(authserv_id) >= 2 and authserv_id[0] == authserv_id[-1] == '"':
        authserv_id = re.sub(r"\\(.)", r"\1", authserv_id[1:-1])
    results: list[tuple[str, str]] = []
    for resinfo in resinfos:
        found = _KEYWORD.match(resinfo)
        if found is not None:
            results.append((found.group(1).lower(), found.group(2).lower()))
    return AuthResults(authserv_id=authserv_id, results=tuple(results))


def dmarc_failed(headers: Iterable[str], authserv_id: str | None) -> bool:
    """Whether our own server (``authserv_id``) reported ``dmarc=fail`` for the letter.

    Always ``False`` without an ``authserv_id``: no header is trusted then.
    """
    if not authserv_id:
        return False
    ours = authserv_id.strip().lower()
    for value in headers:
        parsed = parse_authentication_results(value)
        if parsed is None or parsed.authserv_id.lower() != ours:
            continue
        if ("dmarc", "fail") in parsed.results:
            return True
    return False
