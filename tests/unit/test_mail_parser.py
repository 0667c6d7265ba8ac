"""The parser never raises, whatever arrives; charsets, quotes and HTML read right."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail.decoding import decode_bytes, html_to_text
from mail.parsing import parse_mail
from mail.quoting import split_reply
from mail.understanding import find_codes, understand
from tests.paths import MAIL_CORPUS

CORPUS = sorted(MAIL_CORPUS.glob("*.eml"))
SEEDS = [path.read_bytes()[:20_000] for path in CORPUS]


def check(raw: bytes) -> None:
    mail = parse_mail(raw)
    understand(mail)
    assert isinstance(mail.text, str) and isinstance(mail.subject, str)
    assert "\n" not in mail.subject and "\r" not in mail.subject


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_random_bytes_never_make_the_parser_raise(raw: bytes) -> None:
    check(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    cuts=st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(0, 200), st.binary(max_size=40)),
        max_size=6,
    ),
)
def test_mutated_letters_never_make_the_parser_raise(
    seed: bytes, cuts: list[tuple[int, int, bytes]]
) -> None:
    raw = bytearray(seed)
    for at, length, insert in cuts:
        at = at % (len(raw) + 1)
        raw[at : at + length] = insert
    check(bytes(raw))


@settings(max_examples=150, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "From",
                    "Subject",
                    "Content-Type",
                    "Content-Transfer-Encoding",
                    "Message-ID",
                    "In-Reply-To",
                    "References",
                    "Auto-Submitted",
                    "Content-Disposition",
                ]
            ),
            st.text(max_size=120),
        ),
        max_size=8,
    ),
    body=st.text(max_size=500),
)
def test_arbitrary_headers_never_make_the_parser_raise(
    headers: list[tuple[str, str]], body: str
) -> None:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    check((head + "\r\n" + body).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("codec", ["cp1251", "koi8_r"])
@pytest.mark.parametrize("label", [None, "utf-8", "windows-1251", "koi8-r", "x-unknown"])
def test_cyrillic_reads_right_whatever_the_label(codec: str, label: str | None) -> None:
    text = "Прошу удалить мою учётную запись"

    assert decode_bytes(text.encode(codec), label) == text


def test_kazakh_in_kz1048_and_utf8() -> None:
    text = "Есептік жазбамды жоюыңызды сұраймын"

    assert decode_bytes(text.encode("kz1048"), "KZ-1048") == text
    assert decode_bytes(text.encode("utf-8"), None) == text


def test_html_only_mail_becomes_lines_of_text() -> None:
    html = "<style>p{}</style><p>Hello&nbsp;there</p><div>Line<br>two</div><script>x()</script>"

    assert html_to_text(html) == "Hello there\n\nLine\ntwo"


def test_quoted_history_and_signature_are_apart_from_the_own_words() -> None:
    text = "Please fix my name.\n\n-- \nJohn\n\nOn Mon, 1 Dec 2026, AINA wrote:\n> old"

    own, quoted = split_reply(text)

    assert own == "Please fix my name."
    assert "old" in quoted


def test_a_code_is_not_a_phone_or_a_reference() -> None:
    assert find_codes("code 123 456, ref DSR-2026-000042, tel +7 701 123 45 67") == ("123456",)
