"""The ``DSR_*`` names the project knows: the settings' and, listed once, the tests' own."""

from __future__ import annotations

import re
from pathlib import Path

from aina_dsr.setting_names import known_names, unknown_variables

ROOT = Path(__file__).resolve().parents[2]
# Where the project documents or reads variables besides the settings.
DOCUMENTED = ("README.md", "BENCHMARKS.md", "CONTRIBUTING.md", ".env.example", "tests/conftest.py")
# The README's example of a typo the desk warns of.
TYPOS_SHOWN = {"DSR_IMAP_HOTS"}


def test_every_variable_the_project_documents_is_known() -> None:
    files = [ROOT / name for name in DOCUMENTED] + sorted((ROOT / "bench").rglob("*.py"))
    names = {
        name
        for path in files
        if path.is_file()
        for name in re.findall(r"\bDSR_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8"))
    }
    assert "DSR_TEST_DATABASE_URL" in names
    assert names - known_names() - TYPOS_SHOWN == set()


def test_a_typo_in_any_letter_case_is_named_once_with_the_closest_name(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DSR_IMAP_HOTS=x\ndsr_smtp_prot=25\nDSR_IMAP_HOST=ok\n", encoding="utf-8")

    warnings = unknown_variables(
        {"DSR_IMAP_HOTS": "secret", "HOME": "/root", "DSR_LOG_LEVEL": "INFO"}, env_file
    )

    assert warnings == [
        "warning: DSR_IMAP_HOTS is not a setting and is ignored; did you mean DSR_IMAP_HOST?",
        f"warning: dsr_smtp_prot (in {env_file}) is not a setting and is ignored; "
        "did you mean DSR_SMTP_PORT?",
    ]
