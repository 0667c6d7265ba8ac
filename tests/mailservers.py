"""Real mail servers for the e-mail tests, on 127.0.0.1 only.

``dovecot``: a Dovecot IMAP server started for one test with its own
configuration, passwd file and Maildir (skipped, with the reason, where
Dovecot is not installed). Run as root (CI containers), Dovecot refuses to
serve mail as root, so the Maildir then belongs to ``nobody`` in a fresh
directory that user can reach; otherwise it lives in the test's tmp_path.

``certificates``: a throw-away CA and a certificate it signed for 127.0.0.1
and localhost. ``dovecot_tls`` serves with it, TLS required: implicit TLS on
``ssl_port`` and STARTTLS on ``port``.

``smtp_server``: aiosmtpd's Controller with a handler that records every
letter, and can be told to refuse (``reply``) or be stopped and started again
on the same port (SMTP down, then back). Given ``starttls_context`` it offers
STARTTLS and refuses mail without it; given ``ssl_context`` it speaks TLS from
the first byte.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from imap_tools import MailBox, MailBoxUnencrypted

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


# -- TLS ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """PEM files of a throw-away CA and of a server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts this CA (and verifies host names, as by default)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


def make_certificates(directory: Path) -> Certificates:
    """A CA and a certificate for 127.0.0.1 and localhost, valid from yesterday to tomorrow."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AINA test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificates(ca_file, cert_file, key_file)


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


# -- IMAP ---------------------------------------------------------------------------


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
    # With TLS (``dovecot_tls``): the implicit-TLS port and a client context trusting its CA.
    ssl_port: int | None = None
    ssl_context: ssl.SSLContext | None = None

    def client(self) -> MailBox | MailBoxUnencrypted:
        box: MailBox | MailBoxUnencrypted
        if self.ssl_port is not None:
            box = MailBox(self.host, self.ssl_port, timeout=10, ssl_context=self.ssl_context)
        else:
            box = MailBoxUnencrypted(self.host, self.port, timeout=10)
        return box.login(self.user, self.password, initial_folder=None)

    def logins(self) -> list[str]:
        """Dovecot's log line of every login so far ("..., TLS, ..." when encrypted)."""
        log = self.root / "dovecot.log"
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if "imap-login: Info: Login:" in line]

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

    def discard(self) -> None:
        """End the server and its children at once, for a mailbox thrown away after the test.

        ``stop()`` is an orderly shutdown, as an operator's restart is, and Dovecot's
        master takes a second over it; a test's teardown has no use for that second.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def start(self) -> None:
        # A session of its own, so that ``discard()`` reaches the master's children too.
        self.process = subprocess.Popen(
            [DOVECOT or "dovecot", "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process)
        if self.ssl_port is not None:
            wait_for_port(self.ssl_port, self.process)


def _config(
    root: Path,
    port: int,
    mail_user: str,
    mail_group: str,
    login_user: str,
    tls: Certificates | None = None,
    ssl_port: int = 0,
) -> str:
    if tls is None:
        ssl_settings = "ssl = no"
    else:
        # Dovecot counts 127.0.0.1 -> 127.0.0.1 as "secured" and lets a plain login in
        # anyway; ``logins()`` tells TLS from plain (its log says "TLS" or "secured").
        ssl_settings = (
            f"ssl = required\nssl_cert = <{tls.cert_file}\nssl_key = <{tls.key_file}\n"
            "ssl_min_protocol = TLSv1.2"
        )
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl_settings}
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
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    with _running_dovecot(tmp_path) as server:
        yield server


@pytest.fixture
def dovecot_tls(tmp_path: Path, certificates: Certificates) -> Iterator[Dovecot]:
    """Dovecot requiring TLS: implicit on ``ssl_port``, STARTTLS on ``port``."""
    with _running_dovecot(tmp_path, certificates) as server:
        yield server


@contextlib.contextmanager
def _running_dovecot(tmp_path: Path, tls: Certificates | None = None) -> Iterator[Dovecot]:
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
    ssl_port = free_port() if tls is not None else 0
    config = root / "dovecot.conf"
    config.write_text(
        _config(root, port, mail_user, mail_group, login_user, tls, ssl_port), encoding="utf-8"
    )
    server = Dovecot("127.0.0.1", port, USER, PASSWORD, root, None, config)  # type: ignore[arg-type]
    if tls is not None:
        server.ssl_port, server.ssl_context = ssl_port, tls.client_context()
    server.start()
    try:
        yield server
    finally:
        server.discard()
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
    tls: bool = False  # the letter came over an encrypted connection


@dataclass
class RecordingHandler:
    letters: list[Received] = field(default_factory=list)
    reply: str | None = None  # e.g. "550 5.1.1 no such user": refuse every letter

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply is not None:
            return self.reply
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.letters.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, tls))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: RecordingHandler
    controller: Controller | None = None
    starttls_context: ssl.SSLContext | None = None  # offer STARTTLS and require it
    ssl_context: ssl.SSLContext | None = None  # TLS from the first byte
    authenticator: Any = None  # aiosmtpd's; AUTH is then offered, after TLS only

    @property
    def letters(self) -> list[Received]:
        return self.handler.letters

    def start(self) -> None:
        options: dict[str, Any] = {}
        if self.starttls_context is not None:
            options.update(tls_context=self.starttls_context, require_starttls=True)
        if self.ssl_context is not None:
            options.update(ssl_context=self.ssl_context)
        if self.authenticator is not None:
            options.update(authenticator=self.authenticator, auth_require_tls=True)
        self.controller = Controller(self.handler, hostname=self.host, port=self.port, **options)
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
