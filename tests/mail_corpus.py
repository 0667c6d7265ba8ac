"""The corpus of real-looking letters under tests/data/mail and what each one should come to."""

from __future__ import annotations

import tomllib
from typing import Any

from tests.paths import MAIL_CORPUS as CORPUS

EXPECTED: dict[str, dict[str, Any]] = tomllib.loads(
    (CORPUS / "expected.toml").read_text(encoding="utf-8")
)
CAP = 100 * 1024  # the corpus's big attachment is 200 KB


def letter(name: str) -> bytes:
    """The letter ``name`` as it arrives, grown to its ``inflate_to`` size where it has one."""
    raw = (CORPUS / f"{name}.eml").read_bytes()
    target = EXPECTED[name].get("inflate_to")
    if target:
        line = "Повторяю: прошу удалить мой аккаунт и данные.\r\n".encode()
        raw += line * ((int(target) - len(raw)) // len(line) + 1)
    return raw
