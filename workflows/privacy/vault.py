"""Encryption at rest and blind indexes for personal data.

Names, phones, e-mails, IIN, addresses and message bodies are stored as Fernet
tokens. Where the desk must find a row by such a value (phone, e-mail, IIN) it
stores a keyed HMAC of the normalised value beside the token: equal values give
equal indexes, yet the index reveals nothing without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class VaultError(Exception):
    """A stored value cannot be decrypted with the keys at hand."""


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


class Vault:
    """Encrypts and decrypts sensitive values and computes their blind indexes.

    ``keys`` is the current key first, then older keys still accepted for
    reading (key rotation re-encrypts under the first). Blind indexes and
    one-time codes are keyed with subkeys of the first key alone, so a new
    first key gives new indexes: the rotation (``aina-dsr keys rotate``)
    recomputes every ``*_index`` column from its decrypted value. The audit
    chain's signing key is a subkey too (:attr:`audit_keys`): the first key's
    signs, every key's verifies, and the rotation signs the log again.
    """

    def __init__(self, *keys: str | bytes) -> None:
        if not keys:
            raise ValueError("a vault needs at least one key")
        raw = [k.encode() if isinstance(k, str) else k for k in keys]
        self._fernet = MultiFernet([Fernet(k) for k in raw])
        # Separate subkeys: the index key never encrypts, the code key never indexes.
        self._index_key = _derive(raw[0], b"aina-dsr blind index v1")
        self._code_key = _derive(raw[0], b"aina-dsr one-time codes v1")
        self._audit_keys = tuple(_derive(key, b"aina-dsr audit chain v1") for key in raw)

    @staticmethod
    def generate_key() -> str:
        """A new random key in the format ``DSR_ENCRYPTION_KEY`` takes."""
        return Fernet.generate_key().decode()

    @property
    def code_key(self) -> bytes:
        """The key one-time codes are hashed with."""
        return self._code_key

    @property
    def audit_keys(self) -> tuple[bytes, ...]:
        """The keys audit events are signed with: the first key's signs, each one's verifies."""
        return self._audit_keys

    def encrypt(self, value: str | None) -> bytes | None:
        """Encrypt a text value; ``None`` stays ``None``."""
        if value is None:
            return None
        return self._fernet.encrypt(value.encode("utf-8"))

    def decrypt(self, token: bytes | None) -> str | None:
        """Decrypt a value stored by :meth:`encrypt`."""
        if token is None:
            return None
        try:
            return self._fernet.decrypt(bytes(token)).decode("utf-8")
        except InvalidToken as exc:
            raise VaultError("a stored value cannot be decrypted with the configured key") from exc

    def encrypt_bytes(self, value: bytes) -> bytes:
        """Encrypt raw bytes (attachments)."""
        return self._fernet.encrypt(value)

    def decrypt_bytes(self, token: bytes) -> bytes:
        """Decrypt raw bytes stored by :meth:`encrypt_bytes`."""
        try:
            return self._fernet.decrypt(bytes(token))
        except InvalidToken as exc:
            raise VaultError("a stored value cannot be decrypted with the configured key") from exc

    def encrypt_json(self, value: Any) -> bytes:
        """Encrypt a JSON-serialisable value."""
        return self._fernet.encrypt(json.dumps(value, ensure_ascii=False).encode("utf-8"))

    def decrypt_json(self, token: bytes | None) -> Any:
        """Decrypt a value stored by :meth:`encrypt_json`; ``None`` gives ``None``."""
        if token is None:
            return None
        text = self.decrypt(token)
        return json.loads(text) if text is not None else None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt a token under the current key."""
        return self._fernet.rotate(bytes(token))

    def blind_index(self, kind: str, normalised: str | None) -> str | None:
        """Keyed HMAC-SHA256 of an already normalised value, per kind of value."""
        if normalised is None:
            return None
        mac = hmac.new(self._index_key, f"{kind}\x00{normalised}".encode(), hashlib.sha256)
        return mac.hexdigest()
