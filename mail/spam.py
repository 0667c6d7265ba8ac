"""The mail server's spam verdict: which of the headers it adds say a letter is spam.

The desk never judges a letter spam by its words (a customer who asks to stop
the "скидки" mail is not advertising); SpamAssassin, rspamd or the provider's
filter has judged it already and says so in a header. Which headers and values
count is a setting (``DSR_MAIL_SPAM_HEADERS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The spam verdicts of SpamAssassin and rspamd, as their milters write them: a header
# counts when its value starts with one of these (case does not matter).
DEFAULT_SPAM_HEADERS: dict[str, tuple[str, ...]] = {
    "X-Spam-Flag": ("yes",),
    "X-Spam-Status": ("yes",),
    "X-Spam": ("yes", "true"),
    "X-Spamd-Result": ("default: true",),
    "X-Rspamd-Action": ("reject", "add header", "rewrite subject"),
}


@dataclass(frozen=True)
class SpamRules:
    """Which headers of the mail server say a letter is spam, and the values that say so."""

    headers: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_SPAM_HEADERS))

    @classmethod
    def of(cls, headers: Mapping[str, Sequence[str]]) -> SpamRules:
        """Rules from a setting's mapping of header names to values."""
        return cls({name: tuple(values) for name, values in headers.items()})

    def verdict(self, headers: dict[str, str]) -> str | None:
        """The header that calls the letter spam (``"X-Spam-Flag: YES"``), or ``None``."""
        for name, values in self.headers.items():
            value = headers.get(name.lower())
            if value is None:
                continue
            folded = " ".join(value.split()).lower()
            if any(folded.startswith(v.lower()) for v in values):
                return f"{name}: {value[:40]}"
        return None
