"""Where the deployment files are (Dockerfile, compose, systemd, nginx, env), Dockerfile read."""

from __future__ import annotations

from tests.paths import REPO

ROOT = REPO
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
UNIT = ROOT / "deploy" / "aina-dsr.service"
NGINX = ROOT / "deploy" / "nginx-webhook.conf"
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
ENV_EXAMPLES = [
    ROOT / ".env.example",
    ROOT / "deploy" / "compose.env.example",
    ROOT / "deploy" / "aina-dsr.env.example",
]
DEPLOYMENT_FILES = [DOCKERFILE, COMPOSE, UNIT, NGINX, ENTRYPOINT, *ENV_EXAMPLES]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    pairs = []
    for text in logical:
        instruction, _, arguments = text.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs
