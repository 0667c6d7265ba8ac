"""Telegram's length limits on HTML text: measure a text as Telegram does, shorten it, split it.

Telegram refuses a message over 4096 characters and a caption over 1024,
counted in the text left after entities parsing: tags take no room and an
entity such as ``&lt;`` is one character. Lengths here are counted in UTF-16
code units, which is never less than the count in characters, so a text
measured as fitting fits whichever of the two Telegram counts. A cut never
falls inside a tag or an entity, and the tags open at a cut are closed
before it and opened again after it, so every piece is valid HTML.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
ELLIPSIS = "…"

_TOKEN = re.compile(r"<[^>]*>|&#?\w+;|[^<&]+|[<&]")
_TAG_NAME = re.compile(r"<\s*(/)?\s*([A-Za-z][\w-]*)")
# A cut is moved back to a line break (else a space) when that keeps at least this
# share of the piece: a message split mid-word is harder to read than a short piece.
_KEEP = 0.5


def units(text: str) -> int:
    """UTF-16 code units of plain text (a character outside the BMP counts twice)."""
    return len(text.encode("utf-16-le")) // 2


def visible_length(text: str) -> int:
    """The length of HTML ``text`` after entities parsing, in UTF-16 code units."""
    return sum(atom.width for atom in _atoms(text))


def fits(text: str, limit: int) -> bool:
    """Whether ``visible_length(text) <= limit``, without parsing a text short enough.

    Parsing never makes a text longer: a tag counts nothing and an entity no more
    than the characters spelling it, so a text whose raw length fits fits.
    """
    return units(text) <= limit or visible_length(text) <= limit


@dataclass(frozen=True)
class _Atom:
    """A tag (no width) or one visible character (a letter or an entity)."""

    html: str
    width: int
    opens: str | None = None  # the tag name an opening tag opens
    closes: str | None = None  # the tag name a closing tag closes


def _atoms(text: str) -> list[_Atom]:
    atoms: list[_Atom] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token.startswith("<") and len(token) > 1:
            name = _TAG_NAME.match(token)
            if name is None:
                atoms.append(_Atom(token, 0))
            elif name.group(1):
                atoms.append(_Atom(token, 0, closes=name.group(2).lower()))
            else:
                atoms.append(_Atom(token, 0, opens=name.group(2).lower()))
        elif token.startswith("&") and len(token) > 1:
            atoms.append(_Atom(token, units(html.unescape(token))))
        else:
            atoms.extend(_Atom(char, units(char)) for char in token)
    return atoms


def _closing(stack: tuple[_Atom, ...]) -> str:
    return "".join(f"</{atom.opens}>" for atom in reversed(stack))


def _opening(stack: tuple[_Atom, ...]) -> str:
    return "".join(atom.html for atom in stack)


def split(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """``text`` as pieces of at most ``limit`` each, cut at a line break where one is near."""
    if fits(text, limit):
        return [text]
    atoms = _atoms(text)
    pieces: list[str] = []
    start = 0
    reopen: tuple[_Atom, ...] = ()
    while start < len(atoms):
        cut, stack = _cut(atoms, start, reopen, limit)
        taken = atoms[start:cut]
        # Telegram refuses a message with nothing to read: a piece of tags and blanks is left out.
        if "".join(atom.html for atom in taken if atom.width).strip():
            body = "".join(atom.html for atom in taken)
            pieces.append(_opening(reopen) + body + _closing(stack))
        start, reopen = cut, stack
    return pieces or [text]


def shorten(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` (an ellipsis included) with its tags closed."""
    if fits(text, limit):
        return text
    atoms = _atoms(text)
    cut, stack = _cut(atoms, 0, (), limit - units(ELLIPSIS), lines=False)
    body = "".join(atom.html for atom in atoms[:cut]).rstrip()
    return body + ELLIPSIS + _closing(stack)


def _cut(
    atoms: list[_Atom], start: int, stack: tuple[_Atom, ...], limit: int, *, lines: bool = True
) -> tuple[int, tuple[_Atom, ...]]:
    """Where the piece from ``start`` ends, and the tags open there.

    With ``lines`` a line break is preferred to a later space (pieces of a split
    message read best whole lines); without, the last of either (a shortened text
    keeps as much as fits).
    """
    used = 0
    stacks: list[tuple[_Atom, ...]] = []  # the tags open before each atom of the piece
    breaks: dict[int, int] = {}  # atom index -> how good a place to cut after it (2: line)
    index = start
    while index < len(atoms):
        atom = atoms[index]
        if used + atom.width > limit:
            break
        stacks.append(stack)
        used += atom.width
        if atom.opens is not None:
            stack = (*stack, atom)
        elif atom.closes is not None:
            names = [open_.opens for open_ in stack]
            if atom.closes in names:
                depth = len(names) - 1 - names[::-1].index(atom.closes)
                stack = stack[:depth]
        elif atom.html == "\n":
            breaks[index + 1] = 2
        elif atom.html == " ":
            breaks[index + 1] = 1
        index += 1
    if index >= len(atoms):
        return index, stack
    if index == start:  # a single character wider than the limit: take it alone
        return index + 1, stack
    floor = start + max(1, int((index - start) * _KEEP))
    for qualities in ((2,), (1,)) if lines else ((1, 2),):
        good = [at for at, kind in breaks.items() if kind in qualities and at >= floor]
        if good:
            at = max(good)
            return at, stacks[at - start] if at - start < len(stacks) else stack
    return index, stack
