"""Bytes to text the way mail in the wild needs it: any charset label, right or wrong.

A declared charset is tried first, strictly; when it is unknown, missing or
wrong (a utf-8 label on windows-1251 bytes, koi8-r sent as windows-1251),
``charset-normalizer`` picks among the encodings Kazakh, Russian and English
mail really uses, and a letter-case check settles the classic Cyrillic
confusion that statistical detectors get wrong on short texts: windows-1251
read as koi8-r (and back) turns lower-case words into upper-case ones.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from html import unescape
from html.parser import HTMLParser

from charset_normalizer import from_bytes

# What Kazakh, Russian and English senders actually use, most likely first.
CANDIDATES = ("utf_8", "cp1251", "koi8_r", "kz1048", "cp866", "iso8859_5", "mac_cyrillic")
_SINGLE_BYTE_CYRILLIC = {"cp1251", "koi8_r", "kz1048", "cp866", "iso8859_5", "mac_cyrillic"}
_ALIASES = {
    "win-1251": "cp1251",
    "win1251": "cp1251",
    "windows1251": "cp1251",
    "cp-1251": "cp1251",
    "x-cp1251": "cp1251",
    "koi8": "koi8_r",
    "koi-8r": "koi8_r",
    "koi8r": "koi8_r",
    "utf8": "utf_8",
    "unicode-1-1-utf-8": "utf_8",
    "rk1048": "kz1048",
    "kz-1048": "kz1048",
    "strk1048-2002": "kz1048",
    "x-unknown": "",
    "unknown-8bit": "",
}
_CYRILLIC_LOWER = re.compile(r"[а-яёәғқңөұүһі]")
_CYRILLIC_UPPER = re.compile(r"[А-ЯЁӘҒҚҢӨҰҮҺІ]")
# Cyrillic letters no Kazakh or Russian word has (Serbian, Macedonian, Ukrainian):
# what a wrong table (mac_cyrillic, iso8859_5) makes of ordinary letters.
_FOREIGN_CYRILLIC = re.compile(r"[ЀЂЃЄЅЇЈЉЊЋЌЍЎЏѐђѓєѕїјљњћќѝўџҐґ]")
_JUNK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\u2500-\u259f]")


def codec_for(label: str | None) -> str | None:
    """The Python codec behind a MIME charset label, or ``None`` for an unknown one."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def plausibility(text: str) -> float:
    """How much ``text`` looks like words people write (higher is better)."""
    if not text:
        return 0.0
    lower = len(_CYRILLIC_LOWER.findall(text))
    upper = len(_CYRILLIC_UPPER.findall(text))
    junk = len(_JUNK.findall(text)) + len(_FOREIGN_CYRILLIC.findall(text))
    # People write mostly lower case; a wrong Cyrillic table flips that.
    return lower - 2.0 * max(0, upper - lower // 3) - 5.0 * junk


def _try(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _best_single_byte(data: bytes, first: Iterable[str]) -> str:
    texts: dict[str, str] = {}
    for codec in (*first, *CANDIDATES):
        if codec in texts or codec == "utf_8":
            continue
        decoded = _try(data, codec)
        if decoded is not None:
            texts[codec] = decoded
    if not texts:
        return data.decode("utf-8", "replace")
    # The first candidate wins ties, so a detector's or sender's choice stands when it reads well.
    return max(texts.values(), key=plausibility)


def decode_bytes(data: bytes, declared: str | None = None) -> str:
    """Text from ``data``; never raises, whatever ``declared`` says."""
    if not data:
        return ""
    codec = codec_for(declared)
    if codec is not None and codec not in ("ascii", "us-ascii"):
        text = _try(data, codec)
        if text is not None:
            if codec.replace("-", "_") not in _SINGLE_BYTE_CYRILLIC:
                return text
            # Any byte is valid in these tables, so a wrong label decodes "fine": check it.
            other = _best_single_byte(data, (codec.replace("-", "_"),))
            return text if plausibility(text) >= plausibility(other) else other
    text = _try(data, "utf_8")
    if text is not None:
        return text
    guess = from_bytes(data[:65536], cp_isolation=list(CANDIDATES)).best()
    first = (guess.encoding,) if guess is not None else ()
    return _best_single_byte(data, first)


# -- HTML-only mail ----------------------------------------------------------------

_BLOCKS = {
    "p",
    "div",
    "br",
    "tr",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "blockquote",
    "hr",
    "section",
    "article",
}
_SKIP = {"script", "style", "head", "title", "noscript", "template"}


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._quote_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")
        if tag == "blockquote":
            self._quote_depth += 1
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")
        if tag == "blockquote":
            self._quote_depth = max(0, self._quote_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        text = re.sub(r"\s+", " ", data)
        if self._quote_depth:
            # Quoted history in HTML is a blockquote; mark it like plain-text quoting.
            text = "\n".join("> " + line for line in text.split("\n"))
        self.parts.append(text)


def html_to_text(html: str) -> str:
    """The readable text of an HTML body: blocks become lines, scripts and styles go."""
    collector = _TextCollector()
    try:
        collector.feed(html)
        collector.close()
    except Exception:  # a broken document still has words in it
        return unescape(re.sub(r"<[^>]*>", " ", html))
    lines = [line.strip() for line in "".join(collector.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
