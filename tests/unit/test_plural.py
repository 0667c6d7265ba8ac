"""Plural messages: a number picks the form that reads right in each language."""

from __future__ import annotations

import pytest

from workflows.i18n import LANGUAGES, MissingMessage, catalogue


@pytest.mark.parametrize(
    ("language", "n", "expected"),
    [
        ("ru", 1, "1 рабочий день"),
        ("ru", 3, "3 рабочих дня"),
        ("ru", 15, "15 рабочих дней"),
        ("ru", 11, "11 рабочих дней"),
        ("ru", 21, "21 рабочий день"),
        ("ru", 22, "22 рабочих дня"),
        ("en", 1, "1 working day"),
        ("en", 3, "3 working days"),
        ("kk", 1, "1 жұмыс күні"),
        ("kk", 15, "15 жұмыс күні"),
    ],
)
def test_the_number_picks_the_form(language: str, n: int, expected: str) -> None:
    assert catalogue().plural(language, "privacy.days.working", n) == expected


def test_every_form_of_a_plural_message_names_the_number_and_nothing_else() -> None:
    # A form asking for another placeholder would raise MissingParameter here.
    for msgid in ("privacy.days.working", "privacy.days.calendar"):
        for language in LANGUAGES:
            for n in range(1, 40):
                assert str(n) in catalogue().plural(language, msgid, n)


def test_a_plural_message_that_is_missing_is_a_clear_error() -> None:
    with pytest.raises(MissingMessage, match=r"no\.such\.message"):
        catalogue().plural("ru", "no.such.message", 2)


def test_compiled_translations_know_the_plural_forms() -> None:
    # aiogram's I18n is fed from these: ngettext must find the same forms.
    ru = catalogue().translations()["ru"]

    assert ru.ngettext("privacy.days.calendar", "privacy.days.calendar", 30) == (
        "{n} календарных дней"
    )
    assert ru.ngettext("privacy.days.calendar", "privacy.days.calendar", 1) == (
        "{n} календарный день"
    )
