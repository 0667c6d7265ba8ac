"""``aina-dsr run`` with only the e-mail channel configured, against Dovecot and aiosmtpd."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.mailservers import Dovecot, SmtpServer, dovecot, smtp_server
from tests.paths import MAIL_CORPUS

__all__ = ["dovecot", "smtp_server"]

LETTER = MAIL_CORPUS / "ru_qp_utf8_access.eml"


async def test_run_takes_a_letter_and_acknowledges_it(
    dovecot: Dovecot, smtp_server: SmtpServer, tmp_path: Path, encryption_key: str
) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DSR_ENCRYPTION_KEY": encryption_key,
        "DSR_IMAP_HOST": dovecot.host,
        "DSR_IMAP_PORT": str(dovecot.port),
        "DSR_IMAP_USER": dovecot.user,
        "DSR_IMAP_PASSWORD": dovecot.password,
        "DSR_IMAP_SECURITY": "none",
        "DSR_IMAP_POLL_SECONDS": "5",
        "DSR_SMTP_HOST": smtp_server.host,
        "DSR_SMTP_PORT": str(smtp_server.port),
        "DSR_SMTP_SECURITY": "none",
    }
    dovecot.append(LETTER.read_bytes())
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aina_dsr",
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            while not smtp_server.letters and process.returncode is None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # another process works; bounded by the timeout
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    (letter,) = smtp_server.letters
    assert letter.message["Subject"].startswith("[DSR-")
    assert letter.message["Auto-Submitted"] == "auto-replied"
    # The letter is flagged as handled, never deleted.
    assert len(dovecot.uids()) == 1
