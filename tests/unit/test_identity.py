"""Identity primitives: phones, e-mails, IINs and one-time codes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from workflows.identity import (
    CODE_MAX_TRIES,
    CODE_TTL,
    CodeOutcome,
    InvalidEmail,
    InvalidIIN,
    InvalidPhone,
    check_code,
    contact_phone,
    iin_birth_date,
    iin_check_digit,
    new_code,
    normalize_email,
    normalize_phone,
    tries_left,
    validate_iin,
)

KEY = b"k" * 32
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    ["+7 701 123 45 67", "8 (701) 123-45-67", "87011234567", "77011234567", "+77011234567"],
)
def test_kazakh_numbers_in_every_usual_shape_become_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+77011234567"


def test_a_foreign_number_keeps_its_country() -> None:
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"


@pytest.mark.parametrize(
    ("shared", "e164"),
    [
        ("84912345678", "+84912345678"),  # Vietnam: an 8 that is no Kazakh trunk prefix
        ("85291234567", "+85291234567"),  # Hong Kong
        ("819012345678", "+819012345678"),  # Japan
        ("8613812345678", "+8613812345678"),  # China
        ("821012345678", "+821012345678"),  # South Korea
        ("77011234567", "+77011234567"),  # Kazakhstan
        ("+77011234567", "+77011234567"),
        (" +44 20 7946 0958 ", "+442079460958"),
    ],
)
def test_a_telegram_contacts_number_is_international_with_or_without_its_plus(
    shared: str, e164: str
) -> None:
    assert contact_phone(shared) == e164


@pytest.mark.parametrize("shared", ["", "87011234567", "8 (701) 123-45-67", "12345", "call me"])
def test_a_contacts_number_is_never_read_as_a_national_one(shared: str) -> None:
    # "87011234567" is a Kazakh number typed with its trunk prefix: as a contact it means +870...
    with pytest.raises(InvalidPhone):
        contact_phone(shared)


def test_a_typed_number_keeps_the_kazakh_default() -> None:
    assert normalize_phone("8 701 123 45 67") == "+77011234567"


@pytest.mark.parametrize("raw", ["", "12345", "call me", "+7 701 123"])
def test_what_is_not_a_phone_is_refused_without_echoing_it(raw: str) -> None:
    with pytest.raises(InvalidPhone) as caught:
        normalize_phone(raw)
    assert not raw.strip() or raw not in str(caught.value)


def test_emails_are_normalised_for_lookup() -> None:
    assert normalize_email("  Aigerim.N@Mail.KZ ") == "aigerim.n@mail.kz"


@pytest.mark.parametrize("raw", ["", "aigerim", "a@", "a@b", "two@@mail.kz"])
def test_what_is_not_an_email_is_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalize_email(raw)


def _iin(first_eleven: str) -> str:
    digit = iin_check_digit(first_eleven)
    assert digit is not None
    return first_eleven + str(digit)


def test_a_valid_iin_passes_and_gives_its_birth_date() -> None:
    iin = _iin("90051540012")  # 15 May 1990, 20th-century man
    assert validate_iin(f" {iin[:6]} {iin[6:]} ") == iin
    assert iin_birth_date(iin).isoformat() == "1990-05-15"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("12345", "12 digits"),
        ("9005154001AB", "12 digits"),
        ("900515900123", "7th digit"),
        ("901315400123", "date of birth"),
    ],
)
def test_a_malformed_iin_says_why(raw: str, why: str) -> None:
    with pytest.raises(InvalidIIN, match=why):
        validate_iin(raw)


def test_a_wrong_check_digit_is_caught() -> None:
    iin = _iin("90051540012")
    wrong = iin[:11] + str((int(iin[11]) + 1) % 10)
    with pytest.raises(InvalidIIN, match="check digit"):
        validate_iin(wrong)


def test_a_code_is_six_digits_and_only_its_hash_is_kept() -> None:
    code, stored = new_code(NOW, KEY)
    assert len(code) == 6
    assert code.isdigit()
    assert code not in stored.code_hash
    assert stored.expires_at - stored.created_at == CODE_TTL
    assert tries_left(stored) == CODE_MAX_TRIES


def test_codes_come_from_the_random_source_given() -> None:
    rng = random.Random(7)
    first, _ = new_code(NOW, KEY, randbelow=rng.randrange)
    second, _ = new_code(NOW, KEY, randbelow=random.Random(7).randrange)
    assert first == second  # the source decides; production passes secrets.randbelow


def test_the_right_code_typed_with_spaces_works_once() -> None:
    code, stored = new_code(NOW, KEY)
    outcome, stored = check_code(stored, f"{code[:3]} {code[3:]}", KEY, NOW)
    assert outcome is CodeOutcome.OK
    assert check_code(stored, code, KEY, NOW)[0] is CodeOutcome.USED


def test_five_wrong_tries_kill_the_code() -> None:
    code, stored = new_code(NOW, KEY)
    wrong = "000000" if code != "000000" else "111111"
    outcomes = []
    for _ in range(CODE_MAX_TRIES):
        outcome, stored = check_code(stored, wrong, KEY, NOW)
        outcomes.append((outcome, tries_left(stored)))
    assert outcomes == [
        (CodeOutcome.WRONG, 4),
        (CodeOutcome.WRONG, 3),
        (CodeOutcome.WRONG, 2),
        (CodeOutcome.WRONG, 1),
        (CodeOutcome.DEAD, 0),
    ]
    assert check_code(stored, code, KEY, NOW)[0] is CodeOutcome.DEAD


def test_a_code_expires_after_fifteen_minutes() -> None:
    code, stored = new_code(NOW, KEY)
    just_before = NOW + CODE_TTL - timedelta(seconds=1)
    assert check_code(stored, code, KEY, just_before)[0] is CodeOutcome.OK
    assert check_code(stored, code, KEY, NOW + CODE_TTL)[0] is CodeOutcome.EXPIRED


def test_a_code_hashed_under_another_key_does_not_match() -> None:
    code, stored = new_code(NOW, KEY)
    assert check_code(stored, code, b"x" * 32, NOW)[0] is CodeOutcome.WRONG
