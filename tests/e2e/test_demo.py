"""``aina-dsr demo`` in headless Chromium: a whole access request, and a letter, in the page.

The demo runs as the operator starts it (``python -m aina_dsr demo``, a
process of its own); the test reads the page's address from what it prints
and drives the page as a person would: types, presses the bot's buttons,
shares the contact, acts on the staff card, writes a letter. Every wait is
bounded (Selenium's WebDriverWait polls for the condition).

The screenshot of the finished access request is written to the test's tmp
dir; with ``UPDATE_DEMO_PNG=1`` it also replaces ``docs/demo.png`` (the
README shows it)::

    UPDATE_DEMO_PNG=1 pytest tests/e2e/test_demo.py -k access
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.paths import REPO
from tests.telegram_desk import words
from workflows.i18n import catalogue, kind_name

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = REPO / "docs" / "demo.png"
# The verification code: six digits, not the end of a reference (DSR-2026-000001).
CODE = re.compile(r"(?<![-\d])(\d{6})(?![-\d])")
WAIT = 60.0  # seconds: the machine is shared, Chromium and the desk start slowly

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
    # The tests share one demo (a module's fixture): one worker takes them all.
    pytest.mark.xdist_group("demo"),
]


@dataclass
class Demo:
    url: str
    process: subprocess.Popen[bytes]
    output: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``aina-dsr demo`` started as a process; SIGTERM at the end, and it must stop cleanly.

    One demo serves the file's tests, as one serves a visitor who tries the chat, then
    the mail (a start is a few seconds: aiogram, the classifier, the page).
    """
    tmp_path = tmp_path_factory.mktemp("demo")
    output = tmp_path / "demo.out"
    # Its own working and temporary directories, to see that it leaves nothing behind.
    workdir, temporary = tmp_path / "work", tmp_path / "tmp"
    workdir.mkdir()
    temporary.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(temporary)}
    env = {k: v for k, v in env.items() if not k.startswith("DSR_")}
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "aina_dsr", "demo"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _printed_url(output, process)
        yield Demo(url, process, output)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    log = output.read_text(encoding="utf-8", errors="replace")
    assert code == 0, log
    assert "Traceback" not in log, log
    # The throw-away database and key went with it: nothing is left where it ran.
    assert list(workdir.iterdir()) == []
    assert list(temporary.iterdir()) == []


def _printed_url(output: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        text = output.read_text(encoding="utf-8", errors="replace")
        found = re.search(r"http://127\.0\.0\.1:\d+/", text)
        if found:
            return found.group(0)
        if process.poll() is not None:
            raise AssertionError(f"the demo stopped: {text}")
        time.sleep(0.1)
    raise AssertionError(f"the demo printed no address within {WAIT:g} s")


@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# The page re-draws its panes as the desk answers: find things anew each time, in the page.
_CLICK = """
const [root, selector, label] = arguments;
for (const node of document.querySelectorAll('#' + root + ' ' + selector)) {
  if (node.textContent.trim() === label) { node.click(); return true; }
}
return false;
"""
_TEXTS = "return [...document.querySelectorAll(arguments[0])].map(n => n.textContent);"


def until(driver: Any, condition: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(
        lambda d: condition(d), message=f"{what} within {WAIT:g} s"
    )


def press(driver: Any, pane: str, label: str, selector: str = ".buttons button") -> None:
    """Press the button labelled ``label`` in ``pane`` as soon as it is there."""
    until(driver, lambda d: d.execute_script(_CLICK, pane, selector, label), f"button {label!r}")


def texts(driver: Any, selector: str) -> list[str]:
    return list(driver.execute_script(_TEXTS, selector))


def type_in(driver: Any, field: str, text: str) -> None:
    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(text + Keys.ENTER)


def said(driver: Any, pane: str, text: str) -> None:
    until(
        driver,
        lambda d: any(text in t for t in texts(d, f"#{pane}-log .bubble")),
        f"{text!r} in the {pane} pane",
    )


def test_an_access_request_from_the_chat_to_the_report(
    demo: Demo, browser: Any, tmp_path: Path
) -> None:
    browser.get(demo.url)
    # The customer picks Russian, and asks for access to her data.
    type_in(browser, "customer-input", "/language")
    press(browser, "customer", "Русский")
    type_in(browser, "customer-input", "/start")
    press(browser, "customer", kind_name("ru", "access"))
    said(browser, "customer", words("ru", "identity.ask").split("\n")[0])
    # Telegram's share button under the input: the contact of the chat's own user.
    press(browser, "customer", words("ru", "identity.button"), ".keyboard button")
    press(browser, "customer", words("ru", "summary.confirm"))
    said(browser, "customer", words("ru", "summary.sent"))
    # The reference comes with the next message (the identity confirmed), a moment later.
    reference = until(
        browser,
        lambda d: re.search(r"DSR-\d{4}-\d{6}", " ".join(texts(d, "#customer-log"))),
        "the request's reference in the chat",
    )

    # Staff take the request on its card in the group, then approve it.
    said(browser, "staff", reference.group(0))
    press(browser, "staff", words("ru", "staff.take"))
    press(browser, "staff", words("ru", "staff.approve"))

    # The customer receives the access report: a PDF in the chat, downloadable from the page.
    link = until(
        browser,
        lambda d: next(
            (
                a
                for a in d.find_elements(By.CSS_SELECTOR, "#customer-log a.doc")
                if a.text.endswith(".pdf")
            ),
            None,
        ),
        "the access report in the chat",
    )
    assert reference.group(0) in link.text
    with urllib.request.urlopen(link.get_attribute("href"), timeout=10) as answer:  # noqa: S310
        assert answer.read(5) == b"%PDF-"

    browser.execute_script("for (const l of document.querySelectorAll('.log')) l.scrollTop = 1e9;")
    shot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000  # a page with three panes, not a blank one
    if os.environ.get("UPDATE_DEMO_PNG") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_a_letter_written_in_the_page_is_answered_and_verified_by_its_code(
    demo: Demo, browser: Any
) -> None:
    browser.get(demo.url)
    # The page's own words are in the three languages too.
    title = "#mail h2 [data-label]"
    until(browser, lambda d: texts(d, title) == ["E-mail"], "the page in English")
    Select(browser.find_element(By.ID, "ui-language")).select_by_value("kk")
    assert texts(browser, title) == [catalogue().text("kk", "demo.mail")]
    until(browser, lambda d: d.find_element(By.ID, "mail-from").get_attribute("value"), "a writer")
    writer = browser.find_element(By.ID, "mail-from").get_attribute("value")
    browser.find_element(By.ID, "mail-subject").send_keys("Запрос на доступ к данным")
    browser.find_element(By.ID, "mail-body").send_keys(
        "Здравствуйте! Прошу предоставить копию моих персональных данных.\n"
        "Айгерим Сейтқали, +7 701 123 45 67"
    )
    browser.find_element(By.ID, "mail-send").click()

    # The desk's acknowledgement asks for the code, to the address the letter came from.
    letters = ".letter.out .text"
    code_letter = until(
        browser,
        lambda d: next((t for t in texts(d, letters) if CODE.search(t)), None),
        "the acknowledgement with a code",
    )
    address = writer.split("<")[-1].rstrip(">")
    assert any(address in head for head in texts(browser, ".letter.out .head"))
    code = CODE.search(code_letter)
    assert code is not None

    # Replying with the code (the letter's Reply button keeps the thread) verifies the request.
    until(
        browser,
        lambda d: d.execute_script(
            "const b = document.querySelector('#mail-log .letter.out button');"
            "if (b) { b.click(); return true; } return false;"
        ),
        "the Reply button",
    )
    browser.find_element(By.ID, "mail-body").send_keys(code.group(1))
    browser.find_element(By.ID, "mail-send").click()
    reference = re.search(r"DSR-\d{4}-\d{6}", code_letter)
    assert reference is not None
    verified = catalogue().text(
        "ru", "notify.request_verified.subject", reference=reference.group(0)
    )
    until(
        browser,
        lambda d: verified in texts(d, ".letter.out .subject"),
        "the desk's letter: the request is verified",
    )
    # Verified, the request reaches staff: its card is in the group.
    said(browser, "staff", reference.group(0))


def test_a_second_demo_on_a_taken_port_says_so_in_one_line(demo: Demo, tmp_path: Path) -> None:
    port = demo.url.rstrip("/").rpartition(":")[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSR_")}
    second = subprocess.run(
        [sys.executable, "-m", "aina_dsr", "demo", "--port", port],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"aina-dsr: cannot serve the page on 127.0.0.1:{port} (address already in use); "
        "choose another --port, or leave it out for a free one"
    ]
    # The first one is untouched.
    with urllib.request.urlopen(demo.url + "api/state", timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
