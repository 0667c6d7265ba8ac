"""Where the tests find the repository and their fixture files, wherever the test module sits."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
MAIL_CORPUS = DATA / "mail"
