"""The person's own words, apart from the quoted history and the signature below them.

No maintained Python library does this for Kazakh and Russian clients, so
these are the markers the common clients write (Gmail, Outlook, Apple Mail,
Mail.ru, Yandex, Thunderbird) in the three languages. A forwarded letter is
kept: a person forwarding their own earlier letter means its words.
"""

from __future__ import annotations

import re

_REPLY_HEADER = re.compile(
    r"^\s*("
    r"on .{1,200} wrote:?"
    r"|.{0,200}\b(написал|написала|написал\(а\)|пишет)\s*:"
    r"|.{0,200}\bжазды\s*:"
    r"|-{2,}\s*(original message|исходное сообщение|бастапқы хат)\s*-{2,}"
    r"|(from|от|кімнен)\s*:.*"
    r")\s*$",
    re.IGNORECASE,
)
_SENT_LINE = re.compile(r"^\s*(sent|отправлено|date|дата|жіберілді)\s*:", re.IGNORECASE)
_SIGNATURE = re.compile(
    r"^\s*("
    r"--\s?"
    r"|_{5,}"
    r"|sent from my .{1,60}"
    r"|get outlook for .{1,40}"
    r"|отправлено (с|из) .{1,80}"
    r")\s*$",
    re.IGNORECASE,
)
_FORWARD = re.compile(
    r"^\s*-{2,}\s*(forwarded message|пересылаемое сообщение|пересланное сообщение|"
    r"жіберілген хат)\s*-{2,}\s*$",
    re.IGNORECASE,
)


def _reply_header_at(lines: list[str], index: int) -> bool:
    line = lines[index]
    if not _REPLY_HEADER.match(line):
        return False
    if re.match(r"^\s*(from|от|кімнен)\s*:", line, re.IGNORECASE):
        # Outlook's block: "From:" followed within a few lines by "Sent:"/"Date:".
        return any(_SENT_LINE.match(following) for following in lines[index + 1 : index + 4])
    return True


def split_reply(text: str) -> tuple[str, str]:
    """``(own words, quoted history)``; the signature is dropped from the own words."""
    lines = text.split("\n")
    own: list[str] = []
    quoted: list[str] = []
    forwarded = False
    cut = len(lines)
    for index, line in enumerate(lines[:5000]):
        if _FORWARD.match(line):
            forwarded = True
            continue
        if forwarded:
            own.append(line)
            continue
        if _reply_header_at(lines, index):
            cut = index
            break
        if line.lstrip().startswith(">"):
            quoted.append(line.lstrip().lstrip("> "))
            continue
        if _SIGNATURE.match(line) and any(part.strip() for part in own):
            cut = index
            break
        own.append(line)
    quoted.extend(line.lstrip("> ") for line in lines[cut:])
    result = "\n".join(own).strip()
    return re.sub(r"\n{3,}", "\n\n", result), "\n".join(quoted).strip()
