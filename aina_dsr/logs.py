"""The desk's log lines: text or one JSON object each, no personal data in clear.

A line carries the request's reference as a field of its own; whatever a line
holds, phones, e-mails and IINs leave it masked. Every command sets these up,
so this module imports no more than logging needs (no web server, no metrics).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import IO, Any, Literal

from workflows.privacy.masking import PersonalDataFilter, mask_text
from workflows.requests.references import find_reference

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def record_reference(record: logging.LogRecord, message: str) -> str | None:
    """The request reference of a record: ``extra={"reference": ...}``, else one in the text."""
    given = getattr(record, "reference", None)
    if given:
        return str(given)
    return find_reference(message)


class MaskedTextFormatter(logging.Formatter):
    """The text format, masked as a whole: a traceback is formatted after the filters ran."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and reference when known."""

    def format(self, record: logging.LogRecord) -> str:
        message = mask_text(record.getMessage())
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        reference = record_reference(record, message)
        if reference:
            entry["reference"] = mask_text(reference)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = mask_text(record.exc_text)
        if record.stack_info:
            entry["stack"] = mask_text(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


def log_handler(stream: IO[str], log_format: LogFormat) -> logging.Handler:
    """A handler in the chosen format that lets no personal data out in clear."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else MaskedTextFormatter())
    handler.addFilter(PersonalDataFilter())
    return handler
