"""The demo's page on 127.0.0.1: the customer's chat, the staff group and the mail, in one page.

One HTML page (``page.html``: its script and style inline, nothing loaded from
anywhere) polls ``/api/state`` and posts what the person does to small JSON
endpoints. The state is sent whole when it changed since the version the page
holds, else only the version. Documents the desk sent (the access report) are
downloaded from ``/files/...``. Every text goes to the page as data, and the
page puts it in with ``textContent``.

Actions are accepted only as ``application/json`` posts: a form on another
site cannot send that to 127.0.0.1 without the browser asking first.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web

from aina_dsr.demo.chats import CUSTOMER, STAFF, Chats
from aina_dsr.demo.mailroom import Mailroom
from aina_dsr.demo.telegram_types import StoredFile
from workflows.i18n import LANGUAGES, catalogue

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Nothing but the page itself: no script, style, font or image from anywhere else.
_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)
# The page's own words (demo.po), by the key the page looks them up with.
LABELS = (
    "customer",
    "staff",
    "mail",
    "send",
    "share",
    "attach",
    "as",
    "replying",
    "cancel",
    "reply",
    "send_letter",
    "from",
    "to",
    "subject",
    "body",
    "download",
    "message",
    "empty_mail",
    "empty_chat",
    "empty_group",
    "hint",
)
# The longest text a person may type or write in the page, and the largest file sent.
_MAX_TEXT = 8000
_MAX_FILE = 10 * 1024 * 1024


class PortInUse(Exception):
    """The page's port is taken: another program (or another demo) is listening there."""


class Files(Protocol):
    """Where the files the Bot sent are kept (the Bot API stand-in)."""

    def file(self, file_id: str) -> StoredFile | None: ...


def _text(body: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > _MAX_TEXT or (required and not value.strip()):
        raise web.HTTPBadRequest(text=f"{key}: a text of 1 to {_MAX_TEXT} characters")
    return value


def _number(body: dict[str, Any], key: str, default: int | None = None) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise web.HTTPBadRequest(text=f"{key}: a number")
    return value


def _download(data: bytes, filename: str, content_type: str) -> web.Response:
    return web.Response(
        body=data,
        content_type=content_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            "X-Content-Type-Options": "nosniff",
        },
    )


class DemoPage:
    """The page's web server; ``url`` once started."""

    def __init__(self, *, chats: Chats, mailroom: Mailroom, files: Files, writer: str) -> None:
        self.chats = chats
        self.mailroom = mailroom
        self.files = files
        self.writer = writer
        self.version = 1
        chats.on_change = mailroom.on_change = self._changed
        self._runner: web.AppRunner | None = None
        self.url = ""

    def _changed(self) -> None:
        self.version += 1

    def app(self) -> web.Application:
        # A file the customer sends comes base64-encoded in the JSON: room for one.
        app = web.Application(client_max_size=_MAX_FILE * 4 // 3 + 64 * 1024)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/labels", self._labels)
        app.router.add_post("/api/customer/say", self._customer_says)
        app.router.add_post("/api/customer/contact", self._customer_contact)
        app.router.add_post("/api/customer/file", self._customer_file)
        app.router.add_post("/api/staff/say", self._staff_says)
        app.router.add_post("/api/press", self._press)
        app.router.add_post("/api/mail", self._mail)
        app.router.add_get("/files/telegram/{file_id}", self._telegram_file)
        app.router.add_get("/files/mail/{key}", self._mail_file)
        return app

    async def start(self, *, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise PortInUse(
                f"cannot serve the page on {HOST}:{port} ({reason}); "
                "choose another --port, or leave it out for a free one"
            ) from None
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://{HOST}:{bound}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what the page reads -----------------------------------------------------

    async def _page(self, _request: web.Request) -> web.Response:
        page = (resources.files("aina_dsr.demo") / "page.html").read_text(encoding="utf-8")
        return web.Response(
            text=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": _POLICY, "Cache-Control": "no-store"},
        )

    async def _labels(self, _request: web.Request) -> web.Response:
        texts = catalogue()
        return web.json_response(
            {lang: {key: texts.text(lang, f"demo.{key}") for key in LABELS} for lang in LANGUAGES}
        )

    def state(self) -> dict[str, Any]:
        """Everything the page shows."""
        return {
            "v": self.version,
            **self.chats.as_json(),
            "mail": [self._letter(letter) for letter in self.mailroom.letters],
            "people": {
                "customer": self.chats.customer.first_name,
                "phone": self.chats.phone,
                "staff": [person.first_name for person in self.chats.staff],
                "desk": self.mailroom.desk_address,
                "writer": self.writer,
            },
        }

    @staticmethod
    def _letter(letter: Any) -> dict[str, Any]:
        return {
            "number": letter.number,
            "direction": letter.direction,
            "from": letter.sender,
            "to": letter.to,
            "subject": letter.subject,
            "text": letter.text,
            "at": letter.at.strftime("%H:%M:%S"),
            "message_id": letter.message_id,
            "attachments": [
                {"name": a.filename, "url": f"/files/mail/{a.key}"} for a in letter.attachments
            ],
        }

    async def _state(self, request: web.Request) -> web.Response:
        self.chats.sync()
        held = request.query.get("v", "")
        if held == str(self.version):
            return web.json_response({"v": self.version})
        return web.json_response(self.state())

    async def _telegram_file(self, request: web.Request) -> web.Response:
        stored = self.files.file(request.match_info["file_id"])
        if stored is None:
            raise web.HTTPNotFound()
        name = stored.file_name or f"{stored.file_id}.bin"
        kind = "application/pdf" if name.lower().endswith(".pdf") else "application/octet-stream"
        return _download(stored.content, name, kind)

    async def _mail_file(self, request: web.Request) -> web.Response:
        attachment = self.mailroom.attachments.get(request.match_info["key"])
        if attachment is None:
            raise web.HTTPNotFound()
        return _download(attachment.data, attachment.filename, attachment.content_type)

    # -- what the person does -----------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="application/json only")
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="a JSON object")
        return body

    def _done(self) -> web.Response:
        return web.json_response({"v": self.version})

    async def _customer_says(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        await self.chats.customer_says(_text(body, "text"))
        return self._done()

    async def _customer_contact(self, request: web.Request) -> web.Response:
        await self._body(request)
        await self.chats.customer_shares_contact()
        return self._done()

    async def _customer_file(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        encoded = body.get("data")
        try:
            data = base64.b64decode(encoded if isinstance(encoded, str) else "", validate=True)
        except (ValueError, binascii.Error):
            data = b""
        if not data or len(data) > _MAX_FILE:
            raise web.HTTPBadRequest(text=f"data: a file of at most {_MAX_FILE} bytes, in base64")
        name = _text(body, "name").replace("/", "_").replace("\\", "_")[:200]
        content_type = _text(body, "type", required=False) or "application/octet-stream"
        await self.chats.customer_sends_file(name, content_type, data)
        return self._done()

    async def _staff_says(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        reply_to = body.get("reply_to")
        await self.chats.staff_says(
            _number(body, "staff", 0),
            _text(body, "text"),
            reply_to=_number(body, "reply_to") if reply_to is not None else None,
        )
        return self._done()

    async def _press(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        pane = _text(body, "pane")
        if pane not in (CUSTOMER, STAFF):
            raise web.HTTPBadRequest(text="pane: customer or staff")
        pressed = await self.chats.press(
            pane, _number(body, "bubble"), _text(body, "data"), _number(body, "staff", 0)
        )
        if not pressed:
            raise web.HTTPConflict(text="that button is not there any more")
        return self._done()

    async def _mail(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        reply_to = _text(body, "in_reply_to", required=False).strip() or None
        self.mailroom.write(
            _text(body, "from"), _text(body, "subject"), _text(body, "body"), in_reply_to=reply_to
        )
        return self._done()
