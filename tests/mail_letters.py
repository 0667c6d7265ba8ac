"""Letters through the desk's inbox: one delivered and answered, and the desk's answer read back."""

from __future__ import annotations

import re

from mail.channel import MailChannel
from mail.outcomes import IntakeResult
from tests.mailservers import Dovecot, SmtpServer


async def deliver(channel: MailChannel, dovecot: Dovecot, raw: bytes) -> IntakeResult:
    """The letter arrives, the desk reads it and sends what it has to say by e-mail."""
    dovecot.append(raw)
    [result] = await channel.poller.poll_once()
    while await channel.dispatcher.run_once():
        pass
    return result


def plain(smtp: SmtpServer, index: int = -1) -> str:
    """The plain-text body of the ``index``-th letter the SMTP server received."""
    body = smtp.letters[index].message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def code_in(letter_text: str, reference: str) -> str:
    """The six-digit code a letter's text carries (the reference's digits are not it)."""
    found = re.search(r"(?<![\d-])(\d{6})(?!\d)", letter_text.replace(reference, ""))
    assert found is not None, letter_text
    return found.group(1)


def quoted(letter_text: str) -> str:
    """The text quoted as a reply quotes it, ``> `` before each line."""
    return "\n".join("> " + line for line in letter_text.splitlines())
