"""Real mail servers for the e-mail tests, on 127.0.0.1 only.

``dovecot``: a Dovecot IMAP server started for one test with its own
configuration, passwd file and Maildir (skipped, with the reason, where
Dovecot is not installed). Run as root (CI containers), Dovecot refuses to
serve mail as root, so the Maildir then belongs to ``nobody`` in a fresh
directory that user can reach; otherwise it lives in the test's tmp_path.

``smtp_server``: aiosmtpd's Controller with a handler that records every
letter, and can be told to refuse (``reply``) or be stopped and started again
on the same port (SMTP down, then back).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from imap_tools import MailBoxUnencrypted

DOVECOT = shutil.which("dovecot") or (
    "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
)
USER = "desk"
PASSWORD = "desk-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, process: subprocess.Popen[bytes] | None, seconds: float = 15.0
) -> None:
    """Until something accepts on ``port``: bounded in time and tries."""
    deadline = time.monotonic() + seconds
    for _ in range(1000):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Dovecot:
    """A running Dovecot and a way to put letters in it as another client would."""

    host: str
    port: int
    user: str
    password: str
    root: Path
    process: subprocess.Popen[bytes]
    config: Path

    def client(self) -> MailBoxUnencrypted:
        return MailBoxUnencrypted(self.host, self.port, timeout=10).login(
            self.user, self.password, initial_folder=None
        )

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.client() as box:
            if not box.folder.exists(folder):
                box.folder.create(folder)
            box.append(raw, folder)

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.client() as box:
            box.folder.set(folder)
            return [int(u) for u in box.uids("ALL")]

    def flags(self, folder: str = "INBOX") -> dict[int, tuple[str, ...]]:
        with self.client() as box:
            box.folder.set(folder)
            return {
                int(m.uid or 0): m.flags
                for m in box.fetch("ALL", mark_seen=False, headers_only=True)
            }

    def recreate(self, folder: str) -> None:
        """Delete and create ``folder`` again: a new UIDVALIDITY, as after a server move."""
        with self.client() as box:
            if box.folder.exists(folder):
                box.folder.delete(folder)
            box.folder.create(folder)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [DOVECOT or "dovecot", "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)


def _config(root: Path, port: int, mail_user: str, mail_group: str, login_user: str) -> str:
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {mail_user}
default_internal_group = {mail_group}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    if DOVECOT is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd); IMAP tests skip")
    as_root = os.geteuid() == 0
    if as_root:
        # Dovecot serves no mail as root, and nobody cannot enter pytest's 0700 tmp_path.
        root = Path(tempfile.mkdtemp(prefix="aina-dovecot-"))
        root.chmod(0o755)
        nobody = pwd.getpwnam("nobody")
        mail_user, mail_group = "nobody", _group_name(nobody.pw_gid)
        login_user = "dovenull" if _user_exists("dovenull") else "nobody"
    else:
        root = tmp_path / "dovecot"
        root.mkdir()
        me = pwd.getpwuid(os.geteuid())
        mail_user, mail_group, login_user = me.pw_name, _group_name(me.pw_gid), me.pw_name
    for name in ("mail", "home"):
        (root / name).mkdir()
        if as_root:
            os.chown(root / name, nobody.pw_uid, nobody.pw_gid)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n", encoding="utf-8")
    port = free_port()
    config = root / "dovecot.conf"
    config.write_text(_config(root, port, mail_user, mail_group, login_user), encoding="utf-8")
    server = Dovecot("127.0.0.1", port, USER, PASSWORD, root, None, config)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if as_root:
            shutil.rmtree(root, ignore_errors=True)


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# -- SMTP ---------------------------------------------------------------------------


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class RecordingHandler:
    letters: list[Received] = field(default_factory=list)
    reply: str | None = None  # e.g. "550 5.1.1 no such user": refuse every letter

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply is not None:
            return self.reply
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.letters.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler
    controller: Controller | None = None

    @property
    def letters(self) -> list[Received]:
        return self.handler.letters

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname=self.host, port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer("127.0.0.1", free_port(), RecordingHandler())
    server.start()
    try:
        yield server
    finally:
        server.stop()
