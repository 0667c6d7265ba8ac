"""The words people read: the policy's terms (shared/GLOSSARY.md), the polite "Сіз"/"Вы",
and Kazakh and Russian as their readers write them (issue 16, items 9 to 11)."""

from __future__ import annotations

import re
from datetime import date

import pytest
from babel.messages.pofile import read_po

from workflows.i18n import LOCALES, format_date, kind_hint, kind_name, status_name

KK_LETTERS = "А-Яа-яӘәҒғҚқҢңӨөҰұҮүҺһІіЁё"
RU_LETTERS = "А-Яа-яЁё"


def texts(language: str) -> dict[str, str]:
    """Every text of one language, by message id, as the .po files hold it."""
    found: dict[str, str] = {}
    for path in sorted((LOCALES / language / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as file:
            for m in read_po(file):
                if m.id and m.string:
                    # A plural message: its first id, every form read.
                    msgid = m.id if isinstance(m.id, str) else m.id[0]
                    found[msgid] = m.string if isinstance(m.string, str) else "\n".join(m.string)
    assert len(found) > 250, "the catalogue was not found"
    return found


@pytest.mark.parametrize(
    ("language", "lowercase"),
    [
        ("kk", re.compile(rf"(?<![{KK_LETTERS}])сіз")),
        ("ru", re.compile(rf"(?<![{RU_LETTERS}])(вы|вас|вам|вами|ваш[а-я]*)(?![{RU_LETTERS}])")),
    ],
)
def test_the_person_is_addressed_politely_everywhere(
    language: str, lowercase: re.Pattern[str]
) -> None:
    impolite = {msgid: text for msgid, text in texts(language).items() if lowercase.search(text)}

    assert impolite == {}


def test_kazakh_names_a_withdrawal_as_withdrawn_not_sent_back() -> None:
    kk = texts("kk")

    assert status_name("kk", "cancelled") == "Кері қайтарып алынды"
    assert "кері қайтарып алынды" in kk["notify.request_cancelled.subject"]
    assert "кері қайтарып алынды" in kk["notify.request_cancelled.text"]
    assert "Келісімді кері қайтарып алуыңыз тіркелді" in kk["notify.consent_withdrawn.subject"]
    assert not any("кері қайтарылды" in text.lower() for text in kk.values())


def test_kazakh_names_what_one_leaves_when_one_unsubscribes() -> None:
    kk = texts("kk")

    assert kind_name("kk", "unsubscribe") == "Жаңалықтар материалдарын жіберуден алып тастау"
    subject = kk["notify.unsubscribed.subject"]
    assert "Жаңалықтар материалдарын жіберуден алып тасталдыңыз" in subject


def test_the_greeting_lists_what_one_can_ask_and_no_refusal() -> None:
    greeting = texts("kk")["start.greeting"]

    for right in (
        "білу",
        "түзету",
        "бұғаттау не жою",
        "келісімді кері қайтарып алу",
        "жаңалықтар материалдарын жіберуден алып тастау",
        "шағым беру",
    ):
        assert right in greeting
    assert "бас тарт" not in greeting


def test_the_staff_member_is_not_called_the_operator() -> None:
    # "Орындаушы" is the company in the policy; the person who took the request is staff.
    card = texts("kk")["staff.card"]

    assert "Жауапты қызметкер: {assignee}" in card
    assert "Орындаушы" not in card


def test_blocking_blocks_the_data() -> None:
    kk = texts("kk")

    assert "деректеріңіз уақытша бұғатталады (өңдеу тоқтатылады)" in kk["ask.text.block"]
    assert "уақытша бұғаттау (өңдеу тоқтатылады)" in kind_hint("kk", "block")
    assert "деректеріңіз тексеру аяқталғанша уақытша" in kk["notify.processing_blocked.text"]


def test_unlawful_data_is_described_in_the_policys_own_words() -> None:
    kk = texts("kk")
    words = "мәлімделген өңдеу мақсаттарына сәйкес келме"

    assert words in kk["ask.data_concerned.destroy"]
    assert words in kind_hint("kk", "destroy_unlawful")
    assert words in kk["notify.data_destroyed.text"]
    assert not any("мақсатқа сай емес" in text for text in kk.values())


def test_kazakh_terms_follow_the_glossary() -> None:
    kk = texts("kk")

    assert "6 таңбалы код" in kk["code.sent"]
    assert not any("санды код" in text for text in kk.values())
    assert "оларды алу көзі" in kk["access.summary.files"]
    assert not any("олардың алу көзі" in text for text in kk.values())
    assert "жойылды" in kk["notify.account_deleted.text"]
    assert not any("өшірілді" in text for text in kk.values())
    assert not any("Мұнда мәтін күтемін" in text for text in kk.values())
    assert kk["staff.card.words"] == "Өтініш мәтіні:"


@pytest.mark.parametrize(
    "msgid",
    ["notify.request_verified.text.no_due", "notify.kind_changed.text.no_due", "mail.ack.no_due"],
)
def test_a_clock_not_yet_started_promises_the_deadline_not_a_date(msgid: str) -> None:
    assert "жауап беру мерзімін" in texts("kk")[msgid]
    assert "срок ответа" in texts("ru")[msgid]
    assert "дату" not in texts("ru")[msgid]


def test_russian_staff_texts_read_as_russian_staff_write() -> None:
    ru = texts("ru")

    assert ru["staff.card.words"] == "Текст обращения:"
    assert "не позднее {due}" in ru["notify.staff_overdue.text"]
    assert "дать до {due}" not in ru["notify.staff_overdue.text"]


@pytest.mark.parametrize(
    ("day", "kazakh"),
    [
        (date(2026, 12, 17), "2026 жылғы 17 желтоқсан"),
        (date(2027, 1, 7), "2027 жылғы 7 қаңтар"),
        (date(2027, 3, 21), "2027 жылғы 21 наурыз"),
    ],
)
def test_kazakh_dates_spell_out_the_year(day: date, kazakh: str) -> None:
    assert format_date("kk", day) == kazakh
