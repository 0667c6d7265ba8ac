"""The message catalogue: every text in every language, and messages that render."""

from __future__ import annotations

import functools
import gettext
import html
import re
import string
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from tests.paths import REPO
from workflows.i18n import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    LOCALES,
    Catalogue,
    CatalogueError,
    DeskInfo,
    MissingMessage,
    MissingParameter,
    catalogue,
    format_date,
    kind_hint,
    kind_name,
    pick_language,
    render_notification,
    status_name,
)
from workflows.kinds import RequestKind
from workflows.requests.states import Status

WORKFLOWS = REPO / "workflows"
REFERENCE = "DSR-2026-000042"

PERSON_TEMPLATES: dict[str, dict[str, Any]] = {
    "request_received": {},
    "request_received_code": {"code": "123456"},
    "verification_code": {"code": "123456"},
    "request_verified": {},
    "post_registered": {},
    "request_taken": {},
    "clock_started": {},
    "kind_changed": {},
    "info_requested": {"question": "Which e-mail address did you use?"},
    "request_rejected": {"reason": "We hold no data about this number."},
    "request_completed": {"note": "Your account has been deleted."},
    "complaint_answered": {"answer": "We send newsletters only with your consent."},
    "request_cancelled": {},
    "request_expired": {},
    "still_in_progress": {},
    "deadline_near": {},
    "deadline_missed": {},
}
STAFF_TEMPLATES: dict[str, dict[str, Any]] = {
    "staff_info_received": {"action": "info_received"},
    "staff_message_added": {"action": "message_added"},
    "staff_reminder": {"action": "remind", "days_left": 2},
    "staff_overdue": {"action": "overdue"},
    "staff_card": {"action": "take"},
    "staff_digest_title": {},
    "staff_fulfilment_failed": {
        "action": "fulfilment_failed",
        "reason": "TimeoutError: CRM write timed out for +7701*****67",
    },
    "staff_mail_reply": {
        "action": "message_added",
        "sender": "a***@example.kz",
        "words": "That was not me!",
    },
    "staff_mail_sender_unverified": {
        "mail_id": 7,
        "sender": "a***@example.kz",
        "subject": "Delete my account",
        "lines": "Please delete it.",
    },
}
# The outbox's delivery-failure alarms carry only these params.
DELIVERY_FAILED = {
    "reference": REFERENCE,
    "template": "request_taken",
    "reason": "Forbidden: bot was blocked by the user",
}
ALARMS = ("staff_delivery_failed", "staff_post_failed")
# A digest heading names no single request; nor does a letter that opened none.
HEADLESS = {"staff_digest_title", "staff_mail_sender_unverified"}


def sample_params(template: str, due_date: str | None = "2026-12-17") -> dict[str, Any]:
    if template in ALARMS:
        return dict(DELIVERY_FAILED)
    extra = {**PERSON_TEMPLATES, **STAFF_TEMPLATES}[template]
    return {
        "reference": REFERENCE,
        "kind": "access",
        "status": "in_review",
        "due_date": due_date,
        **extra,
    }


ALL_TEMPLATES = sorted({*PERSON_TEMPLATES, *STAFF_TEMPLATES, *ALARMS})


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


@functools.cache
def compiled() -> dict[str, gettext.GNUTranslations]:
    # Compiling the catalogue takes a while; once per process, not once per message.
    return catalogue().translations()


def raw(language: str, msgid: str) -> str:
    return compiled()[language].gettext(msgid)


def templates_used_by_the_core() -> set[str]:
    # Every outbox template the core enqueues: template="..." arguments and
    # assignments, and the names handed to _to_subject / _to_staff.
    patterns = (
        r'\btemplate\s*=\s*"(\w+)"',
        r'_to_(?:subject|staff)\([^()]*?"(\w+)"',
    )
    found: set[str] = set()
    for path in sorted(WORKFLOWS.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for pattern in patterns:
            found.update(re.findall(pattern, source, flags=re.DOTALL))
    return found


# -- the catalogue is complete ---------------------------------------------------


def test_every_message_has_a_text_in_every_language() -> None:
    # Reads every .po under the locales, so a channel's own file is checked too.
    fresh = Catalogue.load(LOCALES)

    missing = {msgid: fresh.languages_missing(msgid) for msgid in sorted(fresh.msgids())}

    assert {msgid: langs for msgid, langs in missing.items() if langs} == {}


def test_placeholders_are_the_same_in_every_language() -> None:
    differing = {}
    for msgid in sorted(catalogue().msgids()):
        fields = {language: placeholders(raw(language, msgid)) for language in LANGUAGES}
        if len({frozenset(f) for f in fields.values()}) > 1:
            differing[msgid] = fields

    assert differing == {}


def test_the_shared_texts_are_plain_text_for_both_channels() -> None:
    # messages.po serves Telegram (HTML, values escaped) and e-mail (plain text) alike:
    # a tag or a bare <, > or & there would break one of them. A channel's own file
    # (bot.po) may use its markup.
    offending = []
    for path in sorted(LOCALES.glob("*/LC_MESSAGES/messages.po")):
        with path.open("rb") as file:
            for message in read_po(file):
                if message.id and re.search(r"[<>&]", str(message.string)):
                    offending.append((path.parent.parent.name, message.id))

    assert offending == []


def test_every_po_file_has_a_proper_header() -> None:
    for path in sorted(LOCALES.glob("*/LC_MESSAGES/*.po")):
        header = path.read_text(encoding="utf-8").split("\n\n", 1)[0]
        language = path.parent.parent.name
        assert f'"Language: {language}\\n"' in header, path
        assert "charset=utf-8" in header.lower(), path
        assert '"Plural-Forms: nplurals=' in header, path


def test_every_template_the_core_uses_has_a_subject_and_a_text() -> None:
    used = templates_used_by_the_core()
    # The scan works, in the modules of workflows/requests/ too.
    assert {"request_received", "verification_code", "staff_card", "kind_changed"} <= used

    wanted = used | set(ALL_TEMPLATES)
    lacking = sorted(
        msgid
        for template in wanted
        for msgid in (f"notify.{template}.subject", f"notify.{template}.text")
        if not catalogue().has(msgid)
    )

    assert lacking == []


def test_a_text_with_a_deadline_has_a_version_for_when_none_runs_yet() -> None:
    ids = catalogue().msgids()
    with_due = {
        msgid
        for msgid in ids
        if msgid.startswith("notify.")
        and msgid.endswith(".text")
        and "due" in placeholders(raw(DEFAULT_LANGUAGE, msgid))
    }

    assert with_due
    assert sorted(m for m in with_due if f"{m}.no_due" not in ids) == []
    assert not any(
        "due" in placeholders(raw(DEFAULT_LANGUAGE, m)) for m in ids if m.endswith(".subject")
    )


def test_every_kind_and_status_has_words() -> None:
    for language in LANGUAGES:
        for kind in RequestKind:
            assert kind_name(language, kind.value)
            assert "\n" not in kind_hint(language, kind.value)
        for status in Status:
            assert status_name(language, status.value)
        for msgid in ("channel.telegram", "channel.email", "mail.signature"):
            assert catalogue().text(language, msgid, **DeskInfo().context(language))
        for how in ("telegram_contact", "email_code", "none"):
            assert catalogue().text(language, f"verified_by.{how}")


def test_the_signature_carries_the_policys_contacts_by_default() -> None:
    for language in LANGUAGES:
        signature = catalogue().text(language, "mail.signature", **DeskInfo().context(language))
        assert "aina.app@mercury.kz" in signature
        assert "Mercury Properties" in signature
        assert "050400" in signature


def test_no_text_writes_the_desks_address_or_company_itself() -> None:
    # One source of the desk's contact details (DeskInfo, from the settings): a text that
    # wrote them out would name aina.app@mercury.kz even when DSR_MAIL_FROM differs.
    for language in LANGUAGES:
        for path in (LOCALES / language / "LC_MESSAGES").glob("*.po"):
            for message in read_po(path.open("rb"), locale=language):
                if not message.id or message.id == "context.company":
                    continue
                text = str(message.string)
                for literal in ("aina.app@mercury.kz", "050400", "Mercury Properties"):
                    assert literal not in text, (path.name, message.id)


# -- notifications ----------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", ALL_TEMPLATES)
@pytest.mark.parametrize("due_date", ["2026-12-17", None])
def test_each_notification_renders_in_each_language(
    template: str, language: str, due_date: str | None
) -> None:
    params = sample_params(template, due_date)

    # strict: an unknown placeholder or a missing text raises here
    strict = catalogue().notification(template, language, params)
    rendered = render_notification(template, language, params)

    assert rendered == strict
    for part in (rendered.subject, rendered.text):
        assert "{" not in part
        assert "}" not in part
        assert "None" not in part
    if template not in HEADLESS:
        assert REFERENCE in rendered.subject
        assert REFERENCE in rendered.text
    for name, value in params.items():
        if name in {"question", "reason", "note", "code", "words", "sender", "subject", "lines"}:
            assert str(value) in rendered.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_persons_words_are_escaped_for_the_bot_and_raw_for_mail(language: str) -> None:
    params = {**sample_params("request_rejected"), "reason": "<b>no</b> & more"}

    for_bot = render_notification("request_rejected", language, params, escape=html.escape)
    for_mail = render_notification("request_rejected", language, params)

    assert "&lt;b&gt;no&lt;/b&gt; &amp; more" in for_bot.text
    assert "<b>" not in for_bot.text
    assert "<b>no</b> & more" in for_mail.text


@pytest.mark.parametrize(
    ("language", "local"),
    [("kk", "2026 жылғы 17 желтоқсан"), ("ru", "17 декабря 2026"), ("en", "17 December 2026")],
)
def test_the_deadline_is_a_local_date(language: str, local: str) -> None:
    rendered = render_notification("request_verified", language, sample_params("request_verified"))

    assert local in rendered.text
    assert local in format_date(language, date(2026, 12, 17))


def test_without_a_deadline_the_text_says_so_instead_of_a_date() -> None:
    params = {**sample_params("request_verified", None), "kind": "rectify"}

    rendered = render_notification("request_verified", "ru", params)

    assert "Срок начнёт течь" in rendered.text


def test_a_rejection_names_where_to_go_next_and_the_context_can_be_changed() -> None:
    params = sample_params("request_rejected")

    default = render_notification("request_rejected", "ru", params)
    changed = render_notification(
        "request_rejected", "en", params, context={"authority": "the Agency for Data"}
    )

    assert "Министерство искусственного интеллекта и цифрового развития" in default.text
    assert "акимат" in default.text
    assert "суд" in default.text
    assert "the Agency for Data" in changed.text


def test_an_expired_request_says_how_to_file_again() -> None:
    rendered = render_notification("request_expired", "kk", sample_params("request_expired"))

    assert "aina.app@mercury.kz" in rendered.text
    assert "Telegram" in rendered.text


def test_a_completed_request_without_a_note_reads_cleanly() -> None:
    params = {**sample_params("request_completed"), "note": ""}

    rendered = render_notification("request_completed", "en", params)

    assert rendered.text == rendered.text.strip()
    assert rendered.text.endswith(".")


def test_a_broken_text_falls_back_to_english_then_to_a_neutral_line(tmp_path: Path) -> None:
    write_po(tmp_path, "en", {"notify.t.subject": "[{reference}] Hello", "notify.t.text": "Hi"})
    write_po(tmp_path, "ru", {"notify.t.subject": "[{reference}] {unknown}", "notify.t.text": "Hi"})
    broken = Catalogue.load(tmp_path)
    params = {"reference": REFERENCE}

    with pytest.raises(MissingParameter, match="unknown"):
        broken.notification("t", "ru", params)
    assert broken.render("t", "ru", params).subject == f"[{REFERENCE}] Hello"
    neutral = broken.render("nothing", "ru", params)
    assert REFERENCE in neutral.subject
    assert REFERENCE in neutral.text
    assert render_notification("nothing", "kk", params).subject == REFERENCE


# -- languages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "language"),
    [
        ("kk", "kk"),
        ("kk-KZ", "kk"),
        ("KK_kz", "kk"),
        ("ru", "ru"),
        ("ru-RU", "ru"),
        ("be", "ru"),
        ("uk", "ru"),
        ("ru-RU, en;q=0.8", "ru"),
        ("en", "en"),
        ("en-US", "en"),
        ("de", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_pick_language(code: str | None, language: str) -> None:
    assert pick_language(code) == language


def test_an_unknown_language_reads_english() -> None:
    assert catalogue().text("de", "kind.access") == catalogue().text("en", "kind.access")


def test_a_missing_message_is_a_clear_error() -> None:
    with pytest.raises(MissingMessage, match=r"no\.such"):
        catalogue().text("kk", "no.such")
    with pytest.raises(MissingParameter, match="reference"):
        catalogue().text("ru", "notify.request_taken.subject")


def test_translations_feed_gettext_without_mo_files() -> None:
    translations = catalogue().translations()

    assert set(translations) == set(LANGUAGES)
    assert translations["kk"].gettext("kind.delete_account") == "Есептік жазбаны жою"
    assert translations["ru"].gettext("status.in_review") == "На рассмотрении"


# -- loading -----------------------------------------------------------------------


def write_po(root: Path, language: str, messages: dict[str, str], name: str = "messages") -> None:
    folder = root / language / "LC_MESSAGES"
    folder.mkdir(parents=True, exist_ok=True)
    body = [
        'msgid ""',
        'msgstr ""',
        f'"Language: {language}\\n"',
        '"Content-Type: text/plain; charset=UTF-8\\n"',
        '"Plural-Forms: nplurals=2; plural=(n != 1);\\n"',
        "",
    ]
    for msgid, text in messages.items():
        body += [f'msgid "{msgid}"', f'msgstr "{text}"', ""]
    (folder / f"{name}.po").write_text("\n".join(body), encoding="utf-8")


def test_a_language_without_a_text_is_named(tmp_path: Path) -> None:
    write_po(tmp_path, "kk", {"greeting": "Сәлем", "bye": "Сау болыңыз"})
    write_po(tmp_path, "ru", {"greeting": "Здравствуйте", "bye": ""})
    write_po(tmp_path, "en", {"greeting": "Hello"})

    loaded = Catalogue.load(tmp_path)

    assert loaded.msgids() == {"greeting", "bye"}
    assert loaded.languages_missing("greeting") == []
    assert loaded.languages_missing("bye") == ["ru", "en"]
    assert loaded.has("bye")
    with pytest.raises(MissingMessage):
        loaded.text("ru", "bye")


def test_files_beside_messages_po_are_merged(tmp_path: Path) -> None:
    for language in LANGUAGES:
        write_po(tmp_path, language, {"a": "A"})
        write_po(tmp_path, language, {"bot.start": "Start"}, name="bot")

    loaded = Catalogue.load(tmp_path)

    assert loaded.msgids() == {"a", "bot.start"}
    assert loaded.translations()["kk"].gettext("bot.start") == "Start"


def test_a_message_defined_in_two_files_is_an_error(tmp_path: Path) -> None:
    write_po(tmp_path, "ru", {"a": "A"})
    write_po(tmp_path, "ru", {"a": "B"}, name="bot")

    with pytest.raises(CatalogueError, match="'a'"):
        Catalogue.load(tmp_path)
