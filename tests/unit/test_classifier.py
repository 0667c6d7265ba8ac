"""The letter classifier: trained from the letters in the repository, right on letters it never saw.

The held-out sets (``tests/data/letters_heldout*.jsonl``: one as customers
usually write, one harder) were written apart from the training letters
(other people, other situations, other wording) and are never read by
training; ``python -m mail.training --evaluate`` prints the
same figures as tables.
"""

from __future__ import annotations

from email.message import EmailMessage

import numpy as np
import pytest

from mail.classifier import KindClassifier, prepare, training_digest, training_files
from mail.parsing import parse_mail
from mail.spam import SpamRules
from mail.training import HELD_OUT, HELD_OUT_HARD, Letter, evaluate, fit, read_letters
from mail.understanding import Disposition, decide_kind, understand
from workflows.kinds import RequestKind

KINDS = {kind.value for kind in RequestKind} - {"unclassified"}
LANGUAGES = {"kk", "kk-latn", "kk-typed", "ru", "en", "mixed"}


@pytest.fixture(scope="module")
def classifier() -> KindClassifier:
    return KindClassifier.load()


@pytest.fixture(scope="module")
def held_out() -> list[Letter]:
    return read_letters([HELD_OUT, HELD_OUT_HARD])


@pytest.fixture(scope="module")
def training() -> list[Letter]:
    return read_letters(training_files())


def as_mail(letter: Letter, number: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"Person {number} <person{number}@example.kz>"
    message["To"] = "aina.app@mercury.kz"
    message["Subject"] = letter.subject
    message["Message-ID"] = f"<letter-{number}@example.kz>"
    message.set_content(letter.body)
    return bytes(message)


def test_the_labelled_set_is_large_and_covers_every_kind_and_way_of_writing(
    training: list[Letter], held_out: list[Letter]
) -> None:
    assert len(training) + len(held_out) >= 400
    assert len(held_out) >= 250
    for letters in (training, held_out):
        assert {letter.kind for letter in letters} == KINDS
        assert {letter.lang for letter in letters} == LANGUAGES
        assert {letter.reply for letter in letters} == {"kk", "ru", "en"}
    # Written apart: not one held-out letter is a training letter.
    seen = {letter.body.strip() for letter in training}
    assert not [letter.id for letter in held_out if letter.body.strip() in seen]


def test_the_saved_model_was_trained_from_the_letters_in_the_repository(
    classifier: KindClassifier,
) -> None:
    # After changing the letters: python -m mail.training
    assert classifier.meta["digest"] == training_digest(training_files())
    assert set(classifier.kinds) == KINDS


def test_applying_the_saved_model_gives_scikit_learns_probabilities(
    classifier: KindClassifier, training: list[Letter], held_out: list[Letter]
) -> None:
    vectorizer, kinds, _languages = fit(training)
    sample = held_out[::9] + training[::37]
    texts = [prepare(letter.subject, letter.body) for letter in sample]
    expected = kinds.predict_proba(vectorizer.transform(texts))
    for text, row in zip(texts, expected, strict=True):
        ours = classifier.probabilities(text)
        got = np.array([ours[kind] for kind in kinds.classes_])
        assert np.allclose(got, row, atol=1e-4), text[:80]


def test_held_out_letters_get_the_right_kind_at_least_nine_times_in_ten(
    classifier: KindClassifier, held_out: list[Letter]
) -> None:
    result = evaluate(held_out, lambda subject, body: decide_kind(subject, body, classifier))
    assert result.accuracy >= 0.90, result.confusion
    # When the desk decides a kind by itself it is rarely wrong; when it is not sure, the
    # staff card offers the likely kinds and the right one is nearly always among them.
    assert result.wrong <= 0.03 * result.total
    assert result.unclassified_covered >= 0.9 * result.unclassified
    assert result.language_right >= 0.95 * result.total


def test_no_letter_of_the_labelled_set_is_dropped(
    training: list[Letter], held_out: list[Letter], classifier: KindClassifier
) -> None:
    for number, letter in enumerate(training + held_out):
        understood = understand(parse_mail(as_mail(letter, number)), classifier=classifier)
        assert understood.disposition is Disposition.REQUEST, letter.id
        assert understood.kind is not None or understood.candidates, letter.id


# The letters that were spam or the wrong kind before the classifier (issue 12), as customers
# wrote them.
FOUND_BEFORE = [
    ("", "Salemetsiz be! Menin qandai derekterim sizde bar? Bilgim keledi. Rakhmet", "access"),
    ("", "уберите меня из расылки пожалуста, каждый день пишете про скидки", "unsubscribe"),
    (
        "Фамилия",
        "неправильно написана фамилия в профиле, я Ахметова а не Ахмедова. Поправьте",
        "rectify",
    ),
    ("", "Прошу удалить все мои персональные данные.", "delete_account"),
    ("", "Hello, please erase all the personal information you hold about me.", "delete_account"),
    ("", "Please send me a copy of all personal data you hold about me.", "access"),
    ("Запрос о персональных данных", "Здравствуйте, прошу предоставить сведения.", "access"),
    ("Request about personal data", "Hello, see below.", "access"),
    (
        "Отзыв согласия на сбор и обработку персональных данных",
        "Прошу прекратить.",
        "withdraw_consent",
    ),
    (
        "Дербес деректерді жинауға, өңдеуге келісімді кері қайтарып алу",
        "Сәлеметсіз бе.",
        "withdraw_consent",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("subject", "body", "kind"), FOUND_BEFORE)
def test_letters_once_dropped_or_misfiled_get_their_kind(
    subject: str, body: str, kind: str, classifier: KindClassifier
) -> None:
    letter = Letter("x", kind, "?", "?", subject, body)
    understood = understand(parse_mail(as_mail(letter, 1)), classifier=classifier)
    assert understood.disposition is Disposition.REQUEST
    assert (understood.kind or understood.candidates[0]) == kind, understood


def test_spam_is_the_mail_servers_verdict_and_never_the_words(classifier: KindClassifier) -> None:
    words = Letter("x", "unsubscribe", "ru", "ru", "СКИДКИ", "Отпишите от рассылки про акции!")
    plain = understand(parse_mail(as_mail(words, 1)), classifier=classifier)
    assert plain.disposition is Disposition.REQUEST

    flagged = as_mail(words, 2).replace(b"Subject:", b"X-Spam-Flag: YES\r\nSubject:", 1)
    assert understand(parse_mail(flagged)).disposition is Disposition.SPAM
    rspamd = as_mail(words, 3).replace(b"Subject:", b"X-Rspamd-Action: reject\r\nSubject:", 1)
    assert understand(parse_mail(rspamd)).disposition is Disposition.SPAM
    own = SpamRules.of({"X-Junk": ["yes"]})  # DSR_MAIL_SPAM_HEADERS
    junk = as_mail(words, 5).replace(b"Subject:", b"X-Junk: yes\r\nSubject:", 1)
    assert understand(parse_mail(junk), spam=own).disposition is Disposition.SPAM
    assert understand(parse_mail(flagged), spam=own).disposition is Disposition.REQUEST
    clean = as_mail(words, 4).replace(b"Subject:", b"X-Spam-Status: No, score=0.1\r\nSubject:", 1)
    assert understand(parse_mail(clean)).disposition is Disposition.REQUEST
