"""Telegram's length limits: a text measured as Telegram does, cut into valid HTML, nothing lost."""

from __future__ import annotations

import html
import re

import pytest

from bot.telegram_text import TEXT_LIMIT, fits, shorten, split, visible_length

TAG = re.compile(r"<(/?)(\w+)[^>]*>")


def readable(text: str) -> str:
    """What a person reads of HTML ``text``."""
    return html.unescape(re.sub(r"<[^>]*>", "", text))


def balanced(text: str) -> bool:
    stack: list[str] = []
    for closing, name in TAG.findall(text):
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


def test_markup_takes_no_room_and_an_entity_is_one_character() -> None:
    assert visible_length("<b>a</b> &lt;b&gt; &amp;") == len("a <b> &")
    assert visible_length('<a href="https://aina-fashion.kz">policy</a>') == len("policy")


def test_a_character_outside_the_bmp_counts_as_telegram_may_count_it() -> None:
    # Counted in UTF-16 units: never less than Telegram's count, whichever it uses.
    assert visible_length("😀") == 2


def test_a_text_within_the_limit_is_left_as_it_is() -> None:
    text = "<b>DSR-2026-000001</b>\n" + "word " * 100

    assert split(text) == [text]
    assert shorten(text) == text


@pytest.mark.parametrize("limit", [50, 333, TEXT_LIMIT])
def test_a_long_text_is_split_into_valid_pieces_without_losing_a_word(limit: int) -> None:
    lines = [f"<i>line {n}</i>: <b>Ахметқызы &amp; {'сөз ' * (n % 7)}</b>" for n in range(600)]
    text = "📄 <b>DSR-2026-000001</b>\n" + "\n".join(lines)

    pieces = split(text, limit)

    assert len(pieces) > 1
    assert all(visible_length(piece) <= limit for piece in pieces)
    assert all(balanced(piece) for piece in pieces)
    assert all("&" not in re.sub(r"&(lt|gt|amp|quot|#x27);", "", piece) for piece in pieces)
    joined = " ".join(readable(piece) for piece in pieces)
    assert joined.split() == readable(text).split()


def test_a_split_prefers_a_line_break_to_a_cut_mid_line() -> None:
    text = "\n".join(f"line {n:04d} " + "x" * 30 for n in range(400))

    pieces = split(text, 1000)

    assert all(readable(piece).rstrip().endswith("x" * 30) for piece in pieces)


def test_a_shortened_text_ends_with_an_ellipsis_inside_the_limit_and_its_tags_closed() -> None:
    text = "<b>" + "слово " * 2000 + "</b>"

    short = shorten(text, 100)

    assert visible_length(short) <= 100
    assert readable(short).endswith("…")
    assert short.startswith("<b>") and short.endswith("</b>")
    assert balanced(short)


def test_a_cut_never_splits_a_character_outside_the_bmp() -> None:
    short = shorten("😀" * 3000)

    assert visible_length(short) <= TEXT_LIMIT
    assert readable(short) == "😀" * (len(readable(short)) - 1) + "…"


@pytest.mark.parametrize(
    "text",
    ["plain", "<b>bold</b> &lt;x&gt;", "&#128512; 😀 &amp;", "<a href='x'>&nGt;</a>", "a" * 10],
)
def test_a_text_fits_exactly_when_its_visible_length_does(text: str) -> None:
    # ``fits`` skips the parse for a text whose raw length fits: never a different answer.
    for limit in range(0, 30):
        assert fits(text, limit) == (visible_length(text) <= limit), limit


def test_no_entity_is_longer_than_its_spelling() -> None:
    # What ``fits`` relies on: parsing never makes a text longer.
    from html.entities import html5

    for name in html5:
        assert visible_length(f"&{name}") <= len(f"&{name}".encode("utf-16-le")) // 2, name
    assert fits("&#128512;", 2) and not fits("&#128512;", 1)
