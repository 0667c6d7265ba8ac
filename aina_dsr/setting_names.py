"""``DSR_*`` variables that are no setting: each named once, with the closest known name.

A mistyped variable (``DSR_IMAP_HOTS``) is silently ignored by the settings,
so the desk would run without what the operator meant to set. ``check`` and
``run`` warn of every such name, in the environment or in ``.env``, one line
each, and never echo its value: it may be a password or a key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from aina_dsr.settings import ENV_PREFIX, Settings

# DSR_* variables the project reads itself outside the settings: the tests' and the
# benchmarks' own (CONTRIBUTING.md, BENCHMARKS.md). Add one here when a script starts to.
OTHER_KNOWN = frozenset({"DSR_TEST_DATABASE_URL", "DSR_REFRESH_SCREENSHOTS"})
ENV_FILE = Path(".env")


def known_names() -> frozenset[str]:
    """Every ``DSR_*`` name a deployment may set, and the tests' own."""
    fields = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    return frozenset(fields) | OTHER_KNOWN


def _env_file_names(path: Path) -> list[str]:
    from dotenv import dotenv_values

    try:
        return list(dotenv_values(path)) if path.is_file() else []
    except (OSError, UnicodeDecodeError):
        return []  # the settings say what is wrong with the file itself


def unknown_variables(
    environ: Mapping[str, str] | None = None, env_file: Path = ENV_FILE
) -> list[str]:
    """One warning per ``DSR_*`` name that is no setting, naming where it is and a likely fix."""
    environ = os.environ if environ is None else environ
    known = known_names()
    seen: set[str] = set()
    warnings = []
    for names, where in ((sorted(environ), ""), (_env_file_names(env_file), f" (in {env_file})")):
        for name in names:
            upper = name.upper()
            # The settings read names in any letter case.
            if not upper.startswith(ENV_PREFIX) or upper in known or upper in seen:
                continue
            seen.add(upper)
            guess = difflib.get_close_matches(upper, sorted(known - OTHER_KNOWN), n=1, cutoff=0.6)
            hint = f"; did you mean {guess[0]}?" if guess else ""
            warnings.append(f"warning: {name}{where} is not a setting and is ignored{hint}")
    return warnings
