"""Reading a desk's /metrics and /healthz over HTTP, and the samples in a Prometheus text page."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """GET ``path`` on 127.0.0.1:``port``; its status and body (bounded at 10 s)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the page: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(body: str, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels``; None when the page has none."""
    return samples(body).get((name, frozenset(labels.items())))


def by_label(body: str, name: str, label: str) -> dict[str, float]:
    """Every sample ``name`` of the page, keyed by its ``label``."""
    return {
        dict(labels)[label]: number
        for (sample, labels), number in samples(body).items()
        if sample == name and label in dict(labels)
    }
