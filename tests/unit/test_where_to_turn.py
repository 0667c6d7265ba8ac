"""Every refusal and every complaint answer names where to turn next (policy, section 7).

The authorised body with its address, the local executive body (akimat) and the
court, in each language, from the desk's settings; and a considered complaint
is called considered, not fulfilled.
"""

from __future__ import annotations

import pytest

from workflows.i18n import LANGUAGES, DeskInfo, catalogue, render_notification, status_name

COURT = {"kk": "- сот.", "ru": "- в суд.", "en": "- the court."}
CONSIDERED = {"kk": "қаралды", "ru": "рассмотрено", "en": "considered"}
FULFILLED = {"kk": "орындалды", "ru": "выполнен", "en": "fulfilled"}
# The person's notices that refuse, answer a complaint, or own up to a missed deadline.
WHERE_TO_TURN = {
    "request_rejected": {"reason": "We hold no data about this number."},
    "complaint_answered": {"answer": "Your data was used only to deliver your order."},
    "deadline_missed": {},
}
INFO = DeskInfo(
    authority={language: f"AUTHORITY-{language}" for language in LANGUAGES},
    authority_address={language: f"ADDRESS-{language}" for language in LANGUAGES},
)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", sorted(WHERE_TO_TURN))
@pytest.mark.parametrize("due_date", ["2026-12-17", None])
def test_the_notice_names_the_authority_with_its_address_the_akimat_and_the_court(
    template: str, language: str, due_date: str | None
) -> None:
    params = {
        "reference": "DSR-2026-000042",
        "kind": "complaint",
        "status": "completed",
        "due_date": due_date,
        **WHERE_TO_TURN[template],
    }
    notice = render_notification(template, language, params, context=INFO.context(language))
    akimat = catalogue().text(language, "context.akimat")
    assert f"AUTHORITY-{language} (ADDRESS-{language})" in notice.text
    assert akimat in notice.text
    assert notice.text.endswith(COURT[language])


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_complaint_answer_says_considered_and_carries_the_answer(language: str) -> None:
    answer = "Your data was used only to deliver your order."
    params = {"reference": "DSR-2026-000042", "kind": "complaint", "answer": answer}
    notice = render_notification("complaint_answered", language, params)
    assert answer in notice.text
    assert CONSIDERED[language] in notice.text.lower()
    assert CONSIDERED[language] in notice.subject.lower()
    assert FULFILLED[language] not in notice.text.lower()
    assert "DSR-2026-000042" in notice.subject


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_closed_complaint_is_considered_and_other_kinds_completed(language: str) -> None:
    considered = status_name(language, "completed", "complaint")
    assert considered.lower() == CONSIDERED[language]
    assert status_name(language, "completed", "access") == status_name(language, "completed")
    assert status_name(language, "rejected", "complaint") == status_name(language, "rejected")
