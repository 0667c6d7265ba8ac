"""What the operator sees of a running desk: ``/metrics`` and ``/healthz``.

The metrics server answers Prometheus from the database (figures read at
scrape time, kept a few seconds) and from this process's tallies; its
``/healthz`` answers 503 when the database does not answer or a part keeps
crashing (:mod:`aina_dsr.health`). The log lines are :mod:`aina_dsr.logs`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aina_dsr.health import PartHealth
from workflows.clock import Clock
from workflows.metrics import TALLY, DeskFigures, Tally, read_figures

log = logging.getLogger(__name__)


class FigureCache:
    """The database figures, read again at most every ``seconds``; ``None`` if unreachable."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        seconds: float = 5.0,
        timeout: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._seconds = seconds
        self._timeout = timeout
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._figures: DeskFigures | None = None
        self._read_at = -float("inf")

    async def get(self) -> DeskFigures | None:
        async with self._lock:
            if self._monotonic() - self._read_at < self._seconds:
                return self._figures
            try:
                self._figures = await asyncio.wait_for(
                    read_figures(self._sessions, self._clock.now()), self._timeout
                )
            except Exception as exc:
                log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
                self._figures = None
            self._read_at = self._monotonic()
            return self._figures


class DeskCollector(Collector):
    """Turns the last figures and the tallies into Prometheus metrics."""

    def __init__(self, tally: Tally, clock: Clock) -> None:
        self.figures: DeskFigures | None = None
        self._tally = tally
        self._clock = clock

    def collect(self) -> list[Metric]:
        figures = self.figures
        up = GaugeMetricFamily(
            "aina_dsr_database_up", "1 when the database answered the last scrape, else 0"
        )
        up.add_metric([], 1.0 if figures is not None else 0.0)
        metrics: list[Metric] = [up]
        if figures is not None:
            metrics.extend(_figure_metrics(figures))
        metrics.extend(self._tally_metrics())
        return metrics

    def _tally_metrics(self) -> list[Metric]:
        tally = self._tally
        errors = CounterMetricFamily(
            "aina_dsr_telegram_errors",
            "Errors the Telegram Bot API answered to the outbox's sends, by kind",
            labels=["kind"],
        )
        for kind, count in sorted(tally.telegram_errors.items()):
            errors.add_metric([kind], count)
        deliveries = CounterMetricFamily(
            "aina_dsr_deliveries",
            "Outbox deliveries by channel and outcome (sent, retried, failed, unreachable)",
            labels=["channel", "outcome"],
        )
        for (channel, outcome), count in sorted(tally.deliveries.items()):
            deliveries.add_metric([channel, outcome], count)
        lag = GaugeMetricFamily(
            "aina_dsr_imap_lag_seconds",
            "Seconds since this process's poller last read the folder to its end",
            labels=["folder"],
        )
        now = self._clock.now()
        for folder, polled in sorted(tally.imap_polled_at.items()):
            lag.add_metric([folder], max(0.0, (now - polled).total_seconds()))
        started = CounterMetricFamily(
            "aina_dsr_rounds_started",
            "Rounds this process's loops began (outbox dispatches, mailbox polls), by loop",
            labels=["loop"],
        )
        finished = CounterMetricFamily(
            "aina_dsr_rounds_finished",
            "Rounds this process's loops ended, however they ended, by loop",
            labels=["loop"],
        )
        for loop, count in sorted(tally.rounds_started.items()):
            started.add_metric([loop], count)
            finished.add_metric([loop], tally.rounds_finished[loop])
        return [errors, deliveries, lag, started, finished]


def _figure_metrics(figures: DeskFigures) -> list[Metric]:
    requests = GaugeMetricFamily(
        "aina_dsr_requests", "Requests by kind and status", labels=["kind", "status"]
    )
    for (kind, status), count in sorted(figures.requests.items()):
        requests.add_metric([kind, status], count)
    overdue = GaugeMetricFamily("aina_dsr_requests_overdue", "Open requests past their due date")
    overdue.add_metric([], figures.overdue)
    backlog = GaugeMetricFamily(
        "aina_dsr_outbox_backlog", "Outbox messages waiting to be delivered", labels=["channel"]
    )
    oldest = GaugeMetricFamily(
        "aina_dsr_outbox_oldest_age_seconds",
        "Age of the oldest outbox message still waiting",
        labels=["channel"],
    )
    failed = GaugeMetricFamily(
        "aina_dsr_outbox_failed", "Outbox messages that failed for good", labels=["channel"]
    )
    for channel in ("telegram", "email"):
        backlog.add_metric([channel], figures.outbox_backlog.get(channel, 0))
        oldest.add_metric([channel], figures.outbox_oldest_age.get(channel, 0.0))
        failed.add_metric([channel], figures.outbox_failed.get(channel, 0))
    cursor = GaugeMetricFamily(
        "aina_dsr_mail_cursor_age_seconds",
        "Seconds since the IMAP poller (any process) last moved past a letter",
        labels=["folder"],
    )
    for folder, age in sorted(figures.mail_cursor_age.items()):
        cursor.add_metric([folder], age)
    return [requests, overdue, backlog, oldest, failed, cursor]


class MetricsServer:
    """``/metrics`` for Prometheus and ``/healthz`` for a load balancer, on one port."""

    name = "metrics"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        health: PartHealth | None = None,
        tally: Tally = TALLY,
        cache_seconds: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self._engine = engine
        self._health = health if health is not None else PartHealth()
        self._timeout = timeout
        self._figures = FigureCache(sessions, clock, seconds=cache_seconds, timeout=timeout)
        self._collector = DeskCollector(tally, clock)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)
        self.started = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def run(self, stop: asyncio.Event) -> None:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            log.info("metrics and health on http://%s:%s/metrics", self.host, self.port)
            self.started.set()
            await stop.wait()
        finally:
            self.started.clear()
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        self._collector.figures = await self._figures.get()
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        database = await self._database_state()
        problems = [] if database == "ok" else [f"database {database}"]
        problems += self._health.problems()
        body = {
            "status": "failing" if problems else "ok",
            "database": database,
            "components": self._health.states(),
            "problems": problems,
        }
        return web.json_response(body, status=503 if problems else 200)

    async def _database_state(self) -> str:
        async def ping() -> None:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(ping(), self._timeout)
        except Exception as exc:
            return f"unreachable ({type(exc).__name__})"
        return "ok"
