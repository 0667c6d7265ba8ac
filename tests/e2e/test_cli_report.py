"""``aina-dsr report --html``: the register as a page, its figures those of ``requests list``.

The database is filled through the service on a clock the test sets (requests
received over three months: answered on time, late, cancelled, open, overdue;
by Telegram, e-mail and post; in Kazakh, Russian and English), relative to
today, because the command reads the real clock as ``requests list`` does.
The page is then read in headless Chromium (Debian's package).

To refresh the README's picture, docs/report.png: run this file with
``DSR_REFRESH_SCREENSHOTS=1`` (the SQLite run writes it).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from tests.cli_command import aina_dsr_here
from tests.clocks import FrozenClock
from tests.conftest import STAFF_ID
from tests.paths import REPO
from workflows.deadlines.calendar import WorkingCalendar
from workflows.i18n import COMPANY, format_date, kind_name
from workflows.requests.post import PostLetter
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
STAFF = Actor.staff(STAFF_ID, "Dana Staff")
# What the people in the data are called and reached at: none of it may reach the page.
PERSONAL = {
    "name": "Айгерім Сапарова",
    "other_name": "Bolat Kasymov",
    "address": "Абай даңғылы 150",
    "phone": "+77017654321",
    "email": "aigerim.saparova@example.kz",
    "other_email": "bolat.k@example.kz",
    "telegram_id": "734512981",
}


def env(database_url: str, key: str, calendar_file: Path) -> dict[str, str]:
    return {
        "DSR_DATABASE_URL": database_url,
        "DSR_ENCRYPTION_KEY": key,
        "DSR_CALENDAR_FILE": str(calendar_file),
    }


async def fill(service: RequestService, clock: FrozenClock, now: datetime) -> dict[str, str]:
    """Requests of several kinds, channels, languages and months; their references by role."""
    telegram_id = int(PERSONAL["telegram_id"])

    def at(days_ago: float) -> None:
        clock.set(now - timedelta(days=days_ago))

    async def by_telegram(kind: str, language: str, days_ago: float, user: int) -> str:
        at(days_ago)
        view = await service.open_request(
            kind=kind, channel="telegram", language=language, telegram_user_id=user
        )
        await service.verify_by_contact(
            view.reference, sender_user_id=user, contact_user_id=user, phone=PERSONAL["phone"]
        )
        return view.reference

    async def by_post(kind: str, language: str, days_ago: float) -> str:
        at(days_ago)
        letter = PostLetter(
            kind=kind,
            received_on=(now - timedelta(days=days_ago)).astimezone(ALMATY).date(),
            full_name=PERSONAL["name"],
            postal_address=PERSONAL["address"],
            language=language,
            phone=PERSONAL["phone"],
            email=PERSONAL["email"],
        )
        return (await service.file_by_post(letter, "Dana Staff")).reference

    async def answer(reference: str, days_ago: float, *, reject: bool = False) -> None:
        at(days_ago)
        if reject:
            await service.reject(reference, STAFF, "not about personal data")
            return
        await service.approve(reference, STAFF)
        await service.complete(reference, STAFF, "done")

    refs: dict[str, str] = {}
    refs["on_time_access"] = await by_telegram("access", "kk", 70, telegram_id)
    await answer(refs["on_time_access"], 69)
    refs["late_complaint"] = await by_telegram("complaint", "ru", 66, telegram_id + 1)
    await answer(refs["late_complaint"], 20, reject=True)  # 46 days: past 30 calendar days
    refs["late_post_access"] = await by_post("access", "ru", 40)
    await answer(refs["late_post_access"], 26)  # 14 days: past 3 working days
    refs["on_time_unsubscribe"] = await by_telegram("unsubscribe", "en", 35, telegram_id + 2)
    await answer(refs["on_time_unsubscribe"], 34)
    refs["overdue_delete"] = await by_telegram("delete_account", "ru", 40, telegram_id + 3)
    refs["overdue_block"] = await by_telegram("block", "kk", 10, telegram_id + 4)
    at(5)
    refs["open_email_complaint"] = (
        await service.open_request(
            kind="complaint", channel="email", language="ru", email=PERSONAL["other_email"]
        )
    ).reference
    at(3)
    cancelled = await service.open_request(
        kind="access", channel="email", language="en", email=PERSONAL["email"]
    )
    await service.cancel(cancelled.reference, Actor.person_email(PERSONAL["email"]))
    refs["cancelled_access"] = cancelled.reference
    refs["open_post_consent"] = await by_post("withdraw_consent", "kk", 1)
    return refs


ALMATY = WorkingCalendar().tz


def calendar_file(tmp_path: Path, now: datetime) -> Path:
    """The operator's transfers: a weekday between a receipt and its answer made a day off."""
    day = (now - timedelta(days=30)).astimezone(ALMATY).date()
    while day.weekday() >= 5:
        day += timedelta(days=1)
    path = tmp_path / "calendar.toml"
    path.write_text(f"days_off = [{day.isoformat()}]\n", encoding="utf-8")
    return path


def expected(listed: list[dict[str, Any]], calendar: WorkingCalendar) -> dict[str, Any]:
    """The figures the page must show, computed here from ``requests list --json``."""
    by_kind_month = Counter((r["kind"], r["received_at"][:7]) for r in listed)
    answered = [r for r in listed if r["status"] in ("completed", "rejected")]
    on_time = [r for r in answered if r["closed_at"] <= r["due_at"]]
    days = [
        calendar.working_days_between(
            date.fromisoformat(r["received_at"][:10]), date.fromisoformat(r["closed_at"][:10])
        )
        for r in answered
    ]
    return {
        "by_kind_month": by_kind_month,
        "answered": len(answered),
        "on_time": len(on_time),
        "rate": f"{100 * len(on_time) / len(answered):.0f}%",
        "median": statistics.median(days),
        "channels": Counter(r["channel"] for r in listed),
        "languages": Counter(r["language"] for r in listed),
    }


class Loads(HTMLParser):
    """Every attribute of the page that could make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, value in attrs:
            if name in {"src", "href", "xlink:href", "action", "srcset", "data", "poster"}:
                self.targets.append(value or "")


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def test_the_register_page_shows_the_figures_of_requests_list(
    service: RequestService,
    clock: FrozenClock,
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
    chromium: Any,
) -> None:
    now = datetime.now(UTC)
    refs = await fill(service, clock, now)
    transfers = calendar_file(tmp_path, now)
    settings = env(database_url, encryption_key, transfers)
    page = tmp_path / "register.html"

    made = aina_dsr_here(tmp_path, "report", "--html", str(page), timeout=180, **settings)
    assert made.returncode == 0, made.stderr
    listed = json.loads(aina_dsr_here(tmp_path, "requests", "list", "--json", **settings).stdout)
    overdue = json.loads(
        aina_dsr_here(tmp_path, "requests", "list", "--overdue", "--json", **settings).stdout
    )
    want = expected(listed, WorkingCalendar.from_file(transfers))
    html = page.read_text(encoding="utf-8")

    # Nothing is loaded from anywhere: no script, stylesheet, font or image outside the file.
    loads = Loads()
    loads.feed(html)
    assert loads.tags["script"] == 0 and loads.tags["link"] == 0 and loads.tags["img"] == 0
    assert all(target.startswith("#") for target in loads.targets), loads.targets
    assert not re.search(r"url\(\s*['\"]?(?!#)", html), "a CSS url() outside the page"
    # The regulator reads it: references only, no one's name, address, phone or e-mail.
    for value in (*PERSONAL.values(), "7017654321", "Dana Staff"):
        assert value not in html, value
    assert "Mercury Properties LLP" in html

    chromium.set_window_size(1200, 1000)
    chromium.get(page.as_uri())
    height = chromium.execute_script("return document.documentElement.scrollHeight")
    chromium.set_window_size(1200, height + 200)  # the whole page in one screenshot
    assert chromium.execute_script("return performance.getEntriesByType('resource').length") == 0

    def cell(selector: str) -> str:
        return str(chromium.find_element("css selector", selector).text)

    # Counts per kind and month.
    for (kind, month), count in want["by_kind_month"].items():
        assert cell(f'#by-month td[data-kind="{kind}"][data-month="{month}"]') == str(count)
    months = {month for _, month in want["by_kind_month"]}
    shown = chromium.find_elements("css selector", "#by-month td[data-month]")
    assert {c.get_attribute("data-month") for c in shown} >= months
    assert sum(int(c.text) for c in shown if c.get_attribute("data-month") != "all") == len(listed)
    assert cell('[data-card="total"] b') == str(len(listed))
    # The on-time rate (answered by the deadline / answered) and the median working days.
    all_kinds = '#on-time tr[data-kind="all"]'
    assert cell(f'{all_kinds} td[data-figure="answered"]') == str(want["answered"]) == "4"
    assert cell(f'{all_kinds} td[data-figure="on-time"]') == str(want["on_time"]) == "2"
    assert cell(f'{all_kinds} td[data-figure="rate"]') == want["rate"] == "50%"
    assert float(cell(f'{all_kinds} td[data-figure="median"]')) == want["median"]
    assert cell('#on-time tr[data-kind="complaint"] td[data-figure="rate"]') == "0%"
    assert cell('#on-time tr[data-kind="unsubscribe"] td[data-figure="rate"]') == "100%"
    # The overdue list is `requests list --overdue`, and nothing else.
    rows = chromium.find_elements("css selector", "#overdue tr[data-reference]")
    assert {row.get_attribute("data-reference") for row in rows} == {
        r["reference"] for r in overdue
    }
    assert {r["reference"] for r in overdue} == {refs["overdue_delete"], refs["overdue_block"]}
    assert all(int(row.find_element("css selector", "td.late").text) > 0 for row in rows)
    # Channels and languages.
    for channel, count in want["channels"].items():
        assert cell(f'#channels td[data-channel="{channel}"]') == str(count)
    for language, count in want["languages"].items():
        assert cell(f'#languages td[data-language="{language}"]') == str(count)
    assert set(want["channels"]) == {"telegram", "email", "post"}

    # The charts are drawn: each an SVG of real size, the timeline naming the open requests.
    svgs = chromium.find_elements("css selector", ".chart svg")
    assert len(svgs) == 5
    assert all(svg.size["width"] > 100 and svg.size["height"] > 50 for svg in svgs)
    timeline = cell("#timeline-chart")
    assert refs["overdue_block"] in timeline and refs["open_post_consent"] in timeline
    assert refs["on_time_access"] not in timeline
    shot = chromium.get_screenshot_as_png()
    assert_not_blank(shot)
    if os.environ.get("DSR_REFRESH_SCREENSHOTS") and database_url.startswith("sqlite"):
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / "report.png").write_bytes(shot)


def assert_not_blank(png: bytes) -> None:
    """A page with charts: many colours, among them the charts' blue and the overdue red."""
    from PIL import Image

    image = Image.open(BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"{len(colours)} colours: the page looks blank"
    present = {colour for _, colour in colours}
    assert (0x00, 0x72, 0xB2) in present  # on track
    assert (0xD5, 0x5E, 0x00) in present  # overdue


async def test_the_period_selects_by_date_received(
    service: RequestService,
    clock: FrozenClock,
    database_url: str,
    encryption_key: str,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    await fill(service, clock, now)
    settings = env(database_url, encryption_key, calendar_file(tmp_path, now))
    start = (now - timedelta(days=36)).astimezone(ALMATY).date()
    end = (now - timedelta(days=4)).astimezone(ALMATY).date()
    page = tmp_path / "period.html"

    made = aina_dsr_here(
        tmp_path, "report", "--html", str(page), "--from", str(start), "--to", str(end),
        timeout=180, **settings,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    listed = json.loads(aina_dsr_here(tmp_path, "requests", "list", "--json", **settings).stdout)
    inside = [r for r in listed if str(start) <= r["received_at"][:10] <= str(end)]
    html = page.read_text(encoding="utf-8")
    assert f"from {format_date('en', start)} to {format_date('en', end)}" in html
    total = re.search(r'data-card="total"><b>(\d+)</b>', html)
    assert total is not None and int(total.group(1)) == len(inside) == 3

    # The same page in Russian and in Kazakh: the policy's words, the company's own name.
    for language, title in (
        ("ru", "Реестр запросов субъектов персональных данных"),
        ("kk", "Дербес деректер субъектілерінің сұрау салуларының тізілімі"),
    ):
        translated = tmp_path / f"period-{language}.html"
        made = aina_dsr_here(
            tmp_path, "report", "--html", str(translated), "--from", str(start), "--to", str(end),
            "--language", language, timeout=180, **settings,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        html = translated.read_text(encoding="utf-8")
        assert f'<html lang="{language}">' in html and title in html
        assert COMPANY[language] in html and format_date(language, start) in html
        assert kind_name(language, "block") in html and "Register of" not in html

    wrong = aina_dsr_here(
        tmp_path, "report", "--html", str(page), "--from", str(end), "--to", str(start), **settings
    )
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "--from" in wrong.stderr
    bad = aina_dsr_here(tmp_path, "report", "--html", str(page), "--from", "May 1", **settings)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_only_the_report_command_loads_matplotlib(tmp_path: Path) -> None:
    # Every other command starts without it (it takes a while to import).
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, aina_dsr.cli; print('matplotlib' in sys.modules)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
