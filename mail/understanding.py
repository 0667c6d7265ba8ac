"""What a letter asks for: not a request at all, or a kind, a language and fields.

The kind comes from the subject first (the policy's two Kazakh subjects and
their Russian and English equivalents), then from the words of the body.
Automatic mail (auto-replies, bounces, lists) is recognised by its headers,
as RFC 3834 and the mail filters of osTicket and Zammad do, and is never
answered, so no mail loop can start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mail.parsing import ParsedMail
from workflows.identity import InvalidPhone, normalize_phone
from workflows.kinds import RequestKind


class Disposition(StrEnum):
    REQUEST = "request"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    BULK = "bulk"
    SPAM = "spam"


# The policy's own subjects (sections 7 and 8), and how people write them.
POLICY_SUBJECTS: tuple[tuple[str, RequestKind], ...] = (
    (
        "дербес деректерді жинауға, өңдеуге келісімді кері қайтарып алу",
        RequestKind.WITHDRAW_CONSENT,
    ),
    ("дербес деректер туралы сұрау салу", RequestKind.ACCESS),
)

# Most specific first: the first kind whose words appear wins.
KIND_WORDS: tuple[tuple[RequestKind, tuple[str, ...]], ...] = (
    (
        RequestKind.WITHDRAW_CONSENT,
        (
            "келісімді кері",
            "кері қайтарып алу",
            "келісімімді кері",
            "отзыв согласия",
            "отозвать согласие",
            "отзываю согласие",
            "отзываю своё согласие",
            "отзываю свое согласие",
            "отзываю моё согласие",
            "отзываю мое согласие",
            "withdraw consent",
            "withdraw my consent",
            "withdrawal of consent",
            "revoke my consent",
            "revoke consent",
        ),
    ),
    (
        RequestKind.DELETE_ACCOUNT,
        (
            "есептік жазбаны жою",
            "есептік жазбамды жою",
            "аккаунтты жою",
            "аккаунтымды жою",
            "удалить учетную запись",
            "удалить учётную запись",
            "удалите мою учетную",
            "удалите мою учётную",
            "удаление учетной",
            "удаление учётной",
            "удалить аккаунт",
            "удалите аккаунт",
            "удалите мой аккаунт",
            "удалить мой аккаунт",
            "удаление аккаунта",
            "delete my account",
            "delete account",
            "account deletion",
            "close my account",
            "remove my account",
        ),
    ),
    (
        RequestKind.UNSUBSCRIBE,
        (
            "жіберуден алып тастау",
            "жазылымнан",
            "таратылымнан",
            "отписаться",
            "отпишите",
            "отписка",
            "от рассылки",
            "рассылку",
            "unsubscribe",
            "newsletter",
            "stop sending me",
        ),
    ),
    (
        RequestKind.DESTROY_UNLAWFUL,
        (
            "заңсыз алын",
            "незаконно получ",
            "незаконно собран",
            "уничтожить данные",
            "уничтожьте",
            "unlawfully obtained",
            "illegally obtained",
            "obtained unlawfully",
        ),
    ),
    (
        RequestKind.BLOCK,
        (
            "бұғаттау",
            "бұғаттауды",
            "заблокировать мои данные",
            "блокирование",
            "блокировать обработку",
            "приостановить обработку",
            "block my data",
            "block processing",
            "suspend processing",
            "restrict processing",
        ),
    ),
    (
        RequestKind.RECTIFY,
        (
            "түзету",
            "түзетуді",
            "өзгерістер енгізу",
            "исправить",
            "исправьте",
            "исправление",
            "неверно указ",
            "ошибка в фамилии",
            "ошибка в имени",
            "изменить мои данные",
            "correct my",
            "rectif",
            "is wrong in",
            "incorrect",
            "misspelled",
        ),
    ),
    (
        RequestKind.ACCESS,
        (
            "қандай деректер",
            "қандай дербес деректер",
            "деректеріме қол жеткізу",
            "какие персональные данные",
            "какие данные",
            "доступ к моим",
            "копию моих данных",
            "what personal data",
            "what data",
            "access to my",
            "copy of my data",
            "subject access",
        ),
    ),
    (
        RequestKind.COMPLAINT,
        (
            "шағым",
            "жалоба",
            "жалобу",
            "нарушени",
            "complaint",
            "violation",
            "breach",
        ),
    ),
)

# Words that make an unclassified letter worth a human's eyes (a complaint).
PERSONAL_DATA_WORDS = (
    "дербес",
    "деректер",
    "келісім",
    "персональн",
    "данные",
    "данных",
    "согласи",
    "аккаунт",
    "учетн",
    "учётн",
    "personal data",
    "privacy",
    "my data",
    "consent",
    "account",
    "gdpr",
    "aina",
)
SPAM_WORDS = (
    "casino",
    "viagra",
    "crypto",
    "bitcoin",
    "seo ",
    "backlinks",
    "lottery",
    "you have won",
    "investment opportunity",
    "казино",
    "выигрыш",
    "раскрутка",
    "продвижение сайт",
    "заработок",
    "скидк",
    "ұтыс",
    "жеңілдік",
    "акция",
    "sale",
    "discount",
    "promo",
)

_KAZAKH = re.compile(r"[әғқңөұүһіӘҒҚҢӨҰҮҺІ]")
# Everyday Kazakh words written without the Kazakh letters (phones type them that way too).
_KAZAKH_WORDS = re.compile(
    r"\b(керек|жою|жоюды|жоюыңызды|менің|маған|сіздің|сiздiн|рақмет|рахмет|сәлеметсіз|"
    r"салеметсиз|және|туралы|үшін|ушин|өтінемін|сұраймын|сураймын)\b",
    re.IGNORECASE,
)
_CYRILLIC = re.compile(r"[а-яёА-ЯЁ]")
_LATIN = re.compile(r"[a-zA-Z]")
_CODE = re.compile(r"(?<![\d+])(?<!\d[\s\-])(\d{3})[ -]?(\d{3})(?![\s\-]?\d)")
_REFERENCE = re.compile(r"\bDSR-(\d{4})-(\d{6})\b", re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w+])(\+?[78][\s\-(]*\d{3}[\s\-)]*\d{3}[\s-]*\d{2}[\s-]*\d{2})(?!\d)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")

_LABELS: dict[str, tuple[str, ...]] = {
    "full_name": (
        "фио",
        "ф.и.о.",
        "ф.и.о",
        "таә",
        "аты-жөні",
        "аты жөні",
        "full name",
        "name",
        "имя",
    ),
    "postal_address": (
        "почтовый адрес",
        "адрес",
        "пошта мекенжайы",
        "мекенжай",
        "postal address",
        "address",
    ),
    "data_concerned": (
        "какие данные",
        "данные",
        "қандай деректер",
        "деректер",
        "which data",
        "data concerned",
        "data",
    ),
    "correction": (
        "что исправить",
        "исправить",
        "правильно",
        "не верно",
        "түзету",
        "дұрысы",
        "correction",
        "correct",
        "should be",
    ),
    "phone": ("телефон", "тел", "телефон нөмірі", "phone", "mobile"),
}
_ALL_DATA = (
    "все мои данные",
    "всех моих данных",
    "все персональные данные",
    "все данные",
    "барлық деректер",
    "барлық дербес деректер",
    "all my data",
    "all my personal data",
    "all personal data",
)


@dataclass(frozen=True)
class Understanding:
    """What the desk makes of a letter."""

    disposition: Disposition
    reason: str
    kind: RequestKind | None = None
    language: str = "en"
    fields: dict[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()


def automatic(mail: ParsedMail) -> tuple[Disposition, str] | None:
    """Why a letter was written by a machine (and must not be answered), or ``None``."""
    headers = mail.headers
    sender = (mail.sender or headers.get("from", "")).lower()
    local = sender.split("@")[0]
    if mail.content_type == "multipart/report":
        return Disposition.BOUNCE, "multipart/report"
    if local in ("mailer-daemon", "postmaster") or "mailer-daemon" in sender:
        return Disposition.BOUNCE, f"sender {local}"
    if headers.get("return-path", "").strip() == "<>":
        return Disposition.BOUNCE, "empty Return-Path"
    auto = headers.get("auto-submitted", "").strip().lower()
    if auto and not auto.startswith("no"):
        return Disposition.AUTO_REPLY, f"Auto-Submitted: {auto[:40]}"
    for name in ("x-autoreply", "x-autorespond"):
        if name in headers:
            return Disposition.AUTO_REPLY, name
    suppress = headers.get("x-auto-response-suppress", "").lower()
    if "oof" in suppress or "all" in suppress:
        return Disposition.AUTO_REPLY, "X-Auto-Response-Suppress"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "list", "junk", "auto_reply"):
        return Disposition.BULK, f"Precedence: {precedence}"
    if "list-id" in headers:
        return Disposition.BULK, "List-Id"
    if headers.get("x-spam-flag", "").strip().upper() == "YES":
        return Disposition.SPAM, "X-Spam-Flag"
    return None


def detect_language(text: str, header: str | None = None) -> str:
    """kk, ru or en from the letter's letters (Content-Language when they say nothing)."""
    text = text[:5000]
    kazakh = len(_KAZAKH.findall(text)) + 2 * len(_KAZAKH_WORDS.findall(text))
    cyrillic = len(_CYRILLIC.findall(text))
    latin = len(_LATIN.findall(text))
    if kazakh >= 2 and kazakh * 40 >= cyrillic:
        return "kk"
    if cyrillic and cyrillic >= latin / 3:
        return "ru"
    if latin:
        return "en"
    if header:
        primary = header.split(",")[0].strip().lower()[:2]
        if primary in ("kk", "ru", "en"):
            return primary
    return "en"


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace("ё", "е"))


def _words(text: str, words: tuple[str, ...]) -> bool:
    folded = _fold(text)
    return any(word.replace("ё", "е") in folded for word in words)


def detect_kind(subject: str, body: str) -> tuple[RequestKind | None, str]:
    """The kind and where it was found (``subject``, ``body``) or ``(None, "")``."""
    folded_subject = _fold(subject)
    for phrase, kind in POLICY_SUBJECTS:
        if phrase in folded_subject:
            # The general "data request" subject: the body may say which request.
            if kind is RequestKind.ACCESS:
                specific, _ = _kind_in(body)
                if specific is not None:
                    return specific, "policy subject, body"
            return kind, "policy subject"
    found, _ = _kind_in(subject)
    if found is not None:
        return found, "subject"
    found, _ = _kind_in(body)
    if found is not None:
        return found, "body"
    return None, ""


def _kind_in(text: str) -> tuple[RequestKind | None, str]:
    if not text:
        return None, ""
    for kind, words in KIND_WORDS:
        if _words(text, words):
            return kind, kind.value
    return None, ""


def _labelled(text: str, labels: tuple[str, ...]) -> str | None:
    for line in text.split("\n")[:400]:
        stripped = line.strip().lstrip("-•* ")
        lower = stripped.lower()
        for label in labels:
            if lower.startswith(label) and re.match(r"\s*[:：\-—]\s*\S", stripped[len(label) :]):
                value = re.sub(r"^\s*[:：\-—]\s*", "", stripped[len(label) :]).strip()
                if value:
                    return value[:500]
    return None


def find_phone(text: str) -> str | None:
    """The first valid phone number in ``text``, in E.164."""
    for match in _PHONE.finditer(text):
        try:
            return normalize_phone(match.group(1))
        except InvalidPhone:
            continue
    return None


def extract_fields(mail: ParsedMail, kind: RequestKind | None) -> dict[str, Any]:
    """The fields a request of ``kind`` needs, as far as the letter gives them."""
    text = mail.text
    fields: dict[str, Any] = {}
    name = _labelled(text, _LABELS["full_name"])
    if name is None and len(mail.sender_name.split()) >= 2:
        name = mail.sender_name
    if name:
        fields["full_name"] = name
    labelled_phone = _labelled(text, _LABELS["phone"])
    phone = find_phone(labelled_phone or "") or find_phone(text)
    if phone:
        fields["phone"] = phone
    if mail.sender:
        fields["email"] = mail.sender
    address = _labelled(text, _LABELS["postal_address"])
    if address and not _EMAIL.fullmatch(address):
        fields["postal_address"] = address
    data = _labelled(text, _LABELS["data_concerned"])
    if data is None:
        folded = _fold(text)
        data = next((p for p in _ALL_DATA if p.replace("ё", "е") in folded), None)
    if data:
        fields["data_concerned"] = data
    if kind is RequestKind.RECTIFY:
        fields["correction"] = _labelled(text, _LABELS["correction"]) or text[:2000] or None
        if fields["correction"] is None:
            del fields["correction"]
    if text.strip():
        fields["text"] = text[:4000]
    return fields


def find_codes(text: str) -> tuple[str, ...]:
    """Six-digit codes, also written ``123 456`` or ``123-456``."""
    without_phones = _PHONE.sub(" ", text)
    return tuple(dict.fromkeys(a + b for a, b in _CODE.findall(without_phones)))


def find_references(text: str) -> tuple[str, ...]:
    """Request references (``DSR-2026-000042``), upper-cased."""
    return tuple(dict.fromkeys(f"DSR-{y}-{n}" for y, n in _REFERENCE.findall(text)))


def understand(mail: ParsedMail) -> Understanding:
    """Classify ``mail``; see the module docstring."""
    references = find_references(mail.subject)
    machine = automatic(mail)
    language = detect_language(f"{mail.subject}\n{mail.text}", mail.content_language)
    if machine is not None:
        return Understanding(machine[0], machine[1], language=language, references=references)
    # Only the reply's own words: a quote of our acknowledgement carries its code, and
    # whoever quotes it (the person a forged request was filed for) has not confirmed.
    codes = find_codes(mail.text)
    kind, where = detect_kind(mail.subject, mail.text)
    everything = f"{mail.subject}\n{mail.text}"
    if kind is None:
        spammy = _words(everything, SPAM_WORDS)
        if not spammy and _words(everything, PERSONAL_DATA_WORDS):
            kind, where = RequestKind.COMPLAINT, "personal data words"
        elif not references and not mail.thread_ids:
            reason = "advertising words" if spammy else "nothing about personal data"
            return Understanding(Disposition.SPAM, reason, language=language)
    return Understanding(
        Disposition.REQUEST,
        where or "thread",
        kind=kind,
        language=language,
        fields=extract_fields(mail, kind),
        references=references,
        codes=codes,
    )
