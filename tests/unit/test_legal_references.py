"""The kinds table's references point where the policy and the law give each right.

Read against the policy's own text (the edition of 13 March 2024, copied in
tests/data/policy from shared/policy), not against a copy of the table: each
section a kind's ``policy_ref`` names must speak of that right in the policy's
words. The law's side: no reference cites a paragraph the law no longer has.
"""

from __future__ import annotations

import re

import pytest

from tests.paths import DATA, REPO
from workflows.kinds import CLASSIFIED_KINDS, DEFAULT_KINDS, RequestKind

POLICY = DATA / "policy" / "privacy-policy-kk.md"
SHARED_POLICY = REPO.parent / "shared" / "policy" / "privacy-policy-kk.md"

# How the policy words each right: a phrase every section cited for the kind must contain.
RIGHT_IN_THE_POLICY: dict[RequestKind, str] = {
    # "…жеке деректеріңізді алу көзі мен құрамы туралы хабарлайды"
    RequestKind.ACCESS: "алу көзі мен құрамы",
    # "…Сіздің дербес деректеріңізге қажетті өзгерістер енгізеді"
    RequestKind.RECTIFY: "қажетті өзгерістер енгізеді",
    # "Пайдаланушы Орындаушыдан олардың есептік жазбасын жоюды сұрай алады"
    RequestKind.DELETE_ACCOUNT: "есептік жазбасын жоюды",
    # "келісімді (жазбаша) кері қайтарып алған / алуға"
    RequestKind.WITHDRAW_CONSENT: "кері қайтарып ал",
    # "…Сізді Орындаушының жаңалықтар материалдарын жіберуден алып тастайды"
    RequestKind.UNSUBSCRIBE: "жаңалықтар материалдарын жіберуден алып тастайды",
    # "…дербес деректерді бұғаттауды (…уақытша тоқтату…) талап етуге құқылы"
    RequestKind.BLOCK: "бұғаттауды",
    # "егер оның заңсыз алынғаны … расталса, … Сіздің дербес деректеріңізді жояды"
    RequestKind.DESTROY_UNLAWFUL: "заңсыз алынғаны",
    # "7. Өтініштерді, шағымдарды қарау. Дауларды шешу"
    RequestKind.COMPLAINT: "шағым",
}

# Paragraphs the law no longer has: art. 8(3) was excluded by Law No. 96-VII of
# 30 December 2021 (in force sixty days after its publication).
REPEALED = ("art. 8(3)",)


def sections(text: str) -> dict[int, str]:
    """The policy's numbered sections ("6. Сіздің құқықтарыңыз" up to "7. …"), by number."""
    found: dict[int, str] = {}
    number: int | None = None
    for line in text.splitlines():
        heading = re.match(r"(\d{1,2})\. \S", line)
        if heading and int(heading.group(1)) == len(found) + 1:
            number = int(heading.group(1))
            found[number] = ""
        if number is not None:
            found[number] += line + "\n"
    return found


def cited(policy_ref: str) -> list[int]:
    """The section numbers a ``policy_ref`` names: "Policy, sections 6 and 8" is [6, 8]."""
    assert re.fullmatch(r"Policy, sections? \d+( and \d+)*", policy_ref), policy_ref
    return [int(n) for n in re.findall(r"\d+", policy_ref)]


POLICY_SECTIONS = sections(POLICY.read_text(encoding="utf-8"))


def test_the_policy_is_read_into_its_fifteen_sections() -> None:
    assert sorted(POLICY_SECTIONS) == list(range(1, 16))
    assert POLICY_SECTIONS[6].startswith("6. Сіздің құқықтарыңыз")
    assert POLICY_SECTIONS[8].startswith("8. Пайдаланушы құқықтары")


def test_the_copy_is_the_policy_the_desk_is_built_on() -> None:
    if not SHARED_POLICY.exists():
        pytest.skip("shared/policy is not beside this checkout")
    assert POLICY.read_bytes() == SHARED_POLICY.read_bytes()


@pytest.mark.parametrize("kind", CLASSIFIED_KINDS)
def test_each_section_a_kind_cites_gives_that_right(kind: RequestKind) -> None:
    phrase = RIGHT_IN_THE_POLICY[kind]
    numbers = cited(DEFAULT_KINDS[kind].policy_ref)
    for number in numbers:
        assert phrase in POLICY_SECTIONS[number], (kind.value, number)


@pytest.mark.parametrize(
    ("kind", "section"),
    [
        # Issue 16: correction and destruction are promised in section 6 (with their
        # seven working days), blocking in section 8, leaving mailings in section 6.
        (RequestKind.RECTIFY, 6),
        (RequestKind.DESTROY_UNLAWFUL, 6),
        (RequestKind.BLOCK, 8),
        (RequestKind.UNSUBSCRIBE, 6),
    ],
)
def test_the_rights_the_policy_words_in_one_section_cite_that_section(
    kind: RequestKind, section: int
) -> None:
    holding = [n for n, text in POLICY_SECTIONS.items() if RIGHT_IN_THE_POLICY[kind] in text]
    assert holding == [section]
    assert cited(DEFAULT_KINDS[kind].policy_ref) == [section]


def test_the_sections_promising_seven_working_days_are_the_ones_cited() -> None:
    # "7 жұмыс күні ішінде": the policy clocks of a correction and of a destruction.
    for kind in (RequestKind.RECTIFY, RequestKind.DESTROY_UNLAWFUL):
        assert DEFAULT_KINDS[kind].policy is not None
        for number in cited(DEFAULT_KINDS[kind].policy_ref):
            assert "7 жұмыс күні ішінде" in POLICY_SECTIONS[number]


def test_no_reference_cites_a_paragraph_the_law_no_longer_has() -> None:
    for kind, spec in DEFAULT_KINDS.items():
        assert spec.law_ref.startswith("Law on Personal Data, art. "), kind
        for repealed in REPEALED:
            assert repealed not in spec.law_ref, (kind.value, spec.law_ref)


def test_withdrawals_of_consent_cite_the_laws_article_on_consent() -> None:
    consent = (RequestKind.WITHDRAW_CONSENT, RequestKind.UNSUBSCRIBE, RequestKind.DELETE_ACCOUNT)
    for kind in consent:
        assert re.search(r"art\. 8\(\d+\)", DEFAULT_KINDS[kind].law_ref), kind
