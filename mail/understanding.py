"""What a letter asks for: written by a machine, judged spam by the mail server, or a request.

Automatic mail (auto-replies, bounces, lists) is recognised by its headers,
as RFC 3834 and the mail filters of osTicket and Zammad do, and is never
answered, so no mail loop can start. Spam is the mail server's verdict, read
from the headers it adds (which ones count is a setting, see
:class:`SpamRules`), never guessed from the words of a letter.

Every other letter is a request (or a reply to one). Its kind comes from the
policy's own subjects (sections 7 and 8, and their Russian and English
equivalents) when the subject is one of them, else from the trained
classifier (:mod:`mail.classifier`); when the classifier is not sure, the
kind is left open (``None``) with the likely kinds, and the request opens
``unclassified`` on the shortest of their clocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mail.classifier import KindClassifier, default_classifier, fold
from mail.parsing import ParsedMail
from mail.spam import SpamRules
from workflows.identity import InvalidPhone, normalize_phone
from workflows.kinds import RequestKind


class Disposition(StrEnum):
    REQUEST = "request"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    BULK = "bulk"
    SPAM = "spam"


# The policy's own subjects (sections 7 and 8) and their Russian and English equivalents,
# compared in the classifier's folded spelling, so Kazakh typed without its letters counts.
POLICY_SUBJECTS: tuple[tuple[str, RequestKind], ...] = (
    ("дербес деректерді жинауға өңдеуге келісімді кері қайтарып алу", RequestKind.WITHDRAW_CONSENT),
    ("отзыв согласия на сбор и обработку персональных данных", RequestKind.WITHDRAW_CONSENT),
    ("отзыв согласия на обработку персональных данных", RequestKind.WITHDRAW_CONSENT),
    ("withdrawal of consent to the collection and processing", RequestKind.WITHDRAW_CONSENT),
    ("withdrawal of consent to the processing of personal data", RequestKind.WITHDRAW_CONSENT),
    ("дербес деректер туралы сұрау салу", RequestKind.ACCESS),
    ("запрос о персональных данных", RequestKind.ACCESS),
    ("запрос относительно персональных данных", RequestKind.ACCESS),
    ("request about personal data", RequestKind.ACCESS),
    ("request regarding personal data", RequestKind.ACCESS),
)

_SUBJECT_WORDS = re.compile(r"[^\w\s]+")
_FOLDED_SUBJECTS = tuple(
    (" ".join(fold(_SUBJECT_WORDS.sub(" ", phrase)).split()), kind)
    for phrase, kind in POLICY_SUBJECTS
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
    kind: RequestKind | None = None  # None on a request: the classifier was not sure
    language: str = "en"
    fields: dict[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    candidates: tuple[RequestKind, ...] = ()  # the likely kinds, most likely first
    confidence: float = 1.0


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


@dataclass(frozen=True)
class KindDecision:
    """The kind of a letter (``None``: not sure), its likely kinds and the reply language."""

    kind: RequestKind | None
    candidates: tuple[RequestKind, ...]
    where: str
    language: str | None
    confidence: float = 1.0


def policy_subject(subject: str) -> RequestKind | None:
    """The kind named by one of the policy's subjects (or an equivalent), if ``subject`` is one."""
    folded = " ".join(fold(_SUBJECT_WORDS.sub(" ", subject.lower().replace("ё", "е"))).split())
    for phrase, kind in _FOLDED_SUBJECTS:
        if phrase in folded:
            return kind
    return None


def decide_kind(subject: str, body: str, classifier: KindClassifier) -> KindDecision:
    """The policy's subject decides outright; otherwise the classifier, when it is sure.

    The general "request about personal data" subject says only that the letter
    is about the person's data: a body the classifier is sure of says which
    request it is.
    """
    guess = classifier.guess(subject, body)
    candidates = tuple(RequestKind(kind) for kind in guess.candidates)
    named = policy_subject(subject)
    if named is RequestKind.ACCESS and guess.kind is not None and guess.kind != named.value:
        return KindDecision(
            RequestKind(guess.kind), candidates, "policy subject, body", guess.language
        )
    if named is not None:
        return KindDecision(named, (named,), "policy subject", guess.language)
    if guess.kind is not None:
        kind = RequestKind(guess.kind)
        return KindDecision(kind, candidates, "classifier", guess.language, guess.confidence)
    return KindDecision(None, candidates, "classifier not sure", guess.language, guess.confidence)


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
        folded = " ".join(text.lower().replace("ё", "е").split())
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


def understand(
    mail: ParsedMail,
    *,
    classifier: KindClassifier | None = None,
    spam: SpamRules | None = None,
) -> Understanding:
    """Classify ``mail``; see the module docstring."""
    references = find_references(mail.subject)
    machine = automatic(mail)
    if machine is not None:
        language = detect_language(f"{mail.subject}\n{mail.text}", mail.content_language)
        return Understanding(machine[0], machine[1], language=language, references=references)
    verdict = (spam or SpamRules()).verdict(mail.headers)
    if verdict is not None:
        language = detect_language(f"{mail.subject}\n{mail.text}", mail.content_language)
        return Understanding(Disposition.SPAM, verdict, language=language)
    decision = decide_kind(mail.subject, mail.text, classifier or default_classifier())
    language = decision.language or detect_language(mail.subject, mail.content_language)
    return Understanding(
        Disposition.REQUEST,
        decision.where,
        kind=decision.kind,
        language=language,
        fields=extract_fields(mail, decision.kind),
        references=references,
        codes=find_codes(mail.text),
        candidates=decision.candidates,
        confidence=decision.confidence,
    )
