"""The deployment files (Dockerfile, compose.yaml, the systemd unit, nginx, the env examples).

Every ``DSR_*`` variable they set, or name in a comment an operator follows, must be a
setting the desk reads (derived from the Settings model, so a renamed setting fails here);
the image runs as an unprivileged user and checks ``/healthz``; compose names the desk,
PostgreSQL and Redis; installs use constraints.txt.
"""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest
import yaml

from aina_dsr.settings import ENV_PREFIX, Settings
from tests.deployment_files import (
    COMPOSE,
    DEPLOYMENT_FILES,
    DOCKERFILE,
    ENTRYPOINT,
    ENV_EXAMPLES,
    NGINX,
    ROOT,
    UNIT,
    dockerfile_instructions,
)

DSR_NAME = re.compile(r"\bDSR_[A-Z0-9_]*[A-Z0-9]\b")


def setting_names() -> set[str]:
    """The ``DSR_*`` variables the desk reads: one per field of the Settings model."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        names.add(alias.upper() if isinstance(alias, str) else ENV_PREFIX + name.upper())
    return names


def unknown(names: set[str]) -> list[str]:
    """The ``DSR_*`` names among ``names`` that no setting has."""
    known = setting_names()
    return sorted(name for name in names if name.startswith(ENV_PREFIX) and name not in known)


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ENV":
            for word in shlex.split(arguments):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {arguments!r}: use the KEY=VALUE form"
                env[key] = value
    return env


def compose() -> dict[str, object]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def compose_environment(service: dict[str, object]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(str(item).partition("=")[::2] for item in environment)
    assert isinstance(environment, dict)
    return {str(key): str(value) for key, value in environment.items()}


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def unit_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for word in shlex.split(line.removeprefix("Environment=")):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
            env[key.strip()] = value.strip()
    return env


# The check itself


def test_the_names_come_from_the_settings_model() -> None:
    names = setting_names()
    assert {"DSR_DATABASE_URL", "DSR_METRICS_PORT", "DSR_TELEGRAM_WEBHOOK_LISTEN"} <= names
    assert len(names) == len(Settings.model_fields)


def test_a_misspelt_variable_is_caught() -> None:
    assert unknown({"DSR_IMAP_HOTS", "DSR_IMAP_HOST", "POSTGRES_PASSWORD"}) == ["DSR_IMAP_HOTS"]


# Every DSR_ variable the files set is a setting


def test_the_dockerfile_sets_only_settings() -> None:
    env = dockerfile_env()
    assert "DSR_METRICS_PORT" in env
    assert unknown(set(env)) == []


def test_compose_sets_only_settings() -> None:
    for name, service in compose()["services"].items():  # type: ignore[attr-defined]
        assert unknown(set(compose_environment(service))) == [], name


def test_the_systemd_unit_sets_only_settings() -> None:
    env = unit_environment()
    assert env["DSR_DATABASE_URL"].startswith("sqlite:////var/lib/aina-dsr/")
    assert unknown(set(env)) == []


@pytest.mark.parametrize("path", ENV_EXAMPLES, ids=lambda path: path.name)
def test_the_env_examples_set_only_settings_and_hold_no_secret(path: Path) -> None:
    env = env_file(path)
    assert unknown(set(env)) == []
    for secret in ("DSR_ENCRYPTION_KEY", "DSR_TELEGRAM_BOT_TOKEN", "POSTGRES_PASSWORD"):
        assert env.get(secret, "") == "", f"{path.name} holds a value for {secret}"


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda path: path.name)
def test_every_variable_the_files_mention_is_a_setting(path: Path) -> None:
    # Comments too: the webhook variant an operator uncomments must work as written.
    assert unknown(set(DSR_NAME.findall(path.read_text()))) == []


# The image


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = [
        arguments for instruction, arguments in dockerfile_instructions() if instruction == "USER"
    ]
    assert users, "the Dockerfile has no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_the_image_checks_healthz_without_curl() -> None:
    checks = [
        arguments
        for instruction, arguments in dockerfile_instructions()
        if instruction == "HEALTHCHECK"
    ]
    assert len(checks) == 1
    check = checks[0]
    assert "/healthz" in check
    assert "DSR_METRICS_PORT" in check
    assert "curl" not in check
    assert "wget" not in check
    assert check.split()[0] != "NONE"


def test_the_image_upgrades_the_schema_then_runs_the_desk() -> None:
    instructions = dict(dockerfile_instructions())
    assert instructions["CMD"] == '["run"]'
    assert instructions["ENTRYPOINT"] == '["aina-dsr-entrypoint"]'
    script = ENTRYPOINT.read_text()
    assert script.index("aina-dsr db upgrade") < script.index('exec aina-dsr "$@"')
    assert instructions["FROM"].startswith("${PYTHON_IMAGE}")
    assert "python:3.11-slim" in DOCKERFILE.read_text()


def test_the_build_context_leaves_secrets_and_databases_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".env", "*.key", "*.db", ".git"):
        assert pattern in ignored


# compose, the unit, nginx


def test_compose_names_the_desk_postgres_and_redis_with_health_checks() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    assert {"desk", "postgres", "redis"} <= set(services)
    for name in ("desk", "postgres", "redis"):
        assert "healthcheck" in services[name], name
        assert services[name].get("volumes"), name
    desk = services["desk"]
    assert "/healthz" in " ".join(desk["healthcheck"]["test"])
    assert desk["env_file"] == ".env"
    env = compose_environment(desk)
    assert env["DSR_DATABASE_URL"].startswith("postgresql://")
    assert "${POSTGRES_PASSWORD" in env["DSR_DATABASE_URL"]
    assert env["DSR_REDIS_URL"].startswith("redis://redis:")
    # Polling by default: the webhook variant is there, commented.
    assert "DSR_TELEGRAM_WEBHOOK_URL" not in env
    assert "# DSR_TELEGRAM_WEBHOOK_LISTEN" in COMPOSE.read_text()
    # PostgreSQL gets its password, never the desk's key.
    assert "env_file" not in services["postgres"]


def test_the_unit_is_hardened_and_keeps_the_database_in_its_state_directory() -> None:
    service = unit()["Service"]
    assert service["User"] not in ("root", "0")
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "aina-dsr"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ExecStartPre"].endswith("aina-dsr db upgrade")
    assert service["ExecStart"].endswith("aina-dsr run")


def test_nginx_passes_the_webhook_and_its_secret_to_the_listen_address() -> None:
    conf = NGINX.read_text()
    listen = Settings.model_fields["telegram_webhook_listen"].default
    assert f"server {listen};" in conf
    assert "ssl_certificate " in conf
    assert "X-Telegram-Bot-Api-Secret-Token $http_x_telegram_bot_api_secret_token" in conf


# Reproducible installs (constraints.txt)


def test_ci_and_the_image_install_with_the_constraints() -> None:
    assert "-c constraints.txt -e '.[dev]'" in (ROOT / ".ci" / "run").read_text()
    assert "pip install -c constraints.txt ." in DOCKERFILE.read_text()
    pins = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==\S+", pin) for pin in pins), pins
    pinned = {pin.split("==")[0].lower().replace("_", "-") for pin in pins}
    assert {"aiogram", "sqlalchemy", "pytest", "pyyaml"} <= pinned
    assert "aina-privacy-desk" not in pinned
