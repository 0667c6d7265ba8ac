"""A stand-in for the Telegram Bot API: a real HTTP server on 127.0.0.1 for a real aiogram Bot.

It answers what a bot needs to start (``getMe``, ``getUpdates`` with long polling,
webhook and command setup, ``getFile`` and file downloads), records every other
call with its parameters decoded, answers it the way Telegram would, and fails a
call on request (429 with ``retry_after``, 403 blocked, 400 not modified, ...).
As Telegram does, it refuses a text longer than 4096 characters (a caption, 1024)
after entities parsing, every send to a chat whose person blocked the bot, and a
second answer to one button press.

``aina-dsr demo`` runs the desk's real Bot against it, and the tests do too
(``tests/botapi.py``)::

    async with BotAPI() as api, api.bot() as bot:
        await api.offer(api.private_message(ALICE, "/start"))
        call = await api.wait_for("sendMessage", lambda c: c.params["chat_id"] == ALICE.id)
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from aina_dsr.demo.telegram_types import (
    DEFAULT_DESCRIPTIONS,
    MAX_POLL_SECONDS,
    TOKEN,
    TOO_OLD,
    WRITING,
    Call,
    CallLog,
    Failure,
    StoredFile,
    UpdateMaker,
    chat_of,
    decode_param,
    refusal_of,
)
from bot.channel import PlainHttpSession


class BotAPI(UpdateMaker):
    """The stand-in server. Use as ``async with BotAPI() as api``; ``api.base`` is its URL."""

    def __init__(self, *, token: str = TOKEN) -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self._state = CallLog()
        self._changed = asyncio.Condition()
        self._closing = False
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._file_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base = ""

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, shutdown_timeout=MAX_POLL_SECONDS + 1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def server(self) -> TelegramAPIServer:
        return TelegramAPIServer.from_base(self.base)

    @asynccontextmanager
    async def bot(self, **defaults: Any) -> AsyncIterator[Bot]:
        """A real aiogram Bot talking to this server; its session is closed on exit."""
        bot = Bot(
            self.token,
            session=PlainHttpSession(api=self.server),
            default=DefaultBotProperties(**defaults),
        )
        try:
            yield bot
        finally:
            await bot.session.close()

    # -- what the test arranges -------------------------------------------

    async def offer(self, update: dict[str, Any]) -> int:
        """Queue an update for ``getUpdates`` (waking a long poll); returns its ``update_id``."""
        update_id = next(self._update_ids)
        async with self._changed:
            self._state.updates.append({"update_id": update_id, **update})
            self._changed.notify_all()
        return update_id

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int | None = None,
        description: str | None = None,
        chat_id: int | str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (to ``chat_id``, if given) with an error.

        A 429 carries ``retry_after`` (3 s unless given), as Telegram's flood control does.
        """
        if status == 429 and retry_after is None:
            retry_after = 3
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after}"
                if status == 429
                else DEFAULT_DESCRIPTIONS.get(status, "Error")
            )
        self._state.failures.append(
            Failure(method, status, description, retry_after, chat_id, times)
        )

    def block(self, chat_id: int) -> None:
        """The person blocks the bot: every write to their chat is refused with a 403."""
        self._state.blocked.add(str(chat_id))

    def unblock(self, chat_id: int) -> None:
        """The person unblocks the bot: their chat takes messages again."""
        self._state.blocked.discard(str(chat_id))

    def register_file(
        self, content: bytes, *, file_path: str | None = None, file_name: str | None = None
    ) -> StoredFile:
        """Put a file on the server so that ``getFile`` and the download route find it."""
        number = next(self._file_ids)
        stored = StoredFile(
            file_id=f"FILE{number:06d}",
            file_unique_id=f"U{number:06d}",
            file_path=file_path or f"documents/file_{number}.bin",
            content=content,
            file_name=file_name,
        )
        self._state.files[stored.file_id] = stored
        return stored

    # -- what the test checks ---------------------------------------------

    def file(self, file_id: str) -> StoredFile | None:
        """A file on the server (one the Bot sent, or one put there), by its ``file_id``."""
        return self._state.files.get(file_id)

    def calls(self, method: str | None = None) -> list[Call]:
        """Successful calls, in order (of ``method`` only, if given)."""
        return [
            c
            for c in self._state.calls
            if c.error is None and (method is None or c.method == method)
        ]

    def attempts(self, method: str | None = None) -> list[Call]:
        """Every call, failed ones included."""
        return [c for c in self._state.calls if method is None or c.method == method]

    def sent_to(self, chat_id: int | str) -> list[Call]:
        """Successful calls addressed to ``chat_id``."""
        return [c for c in self.calls() if str(c.chat_id) == str(chat_id)]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 (a test's bound, not an I/O timeout)
    ) -> Call:
        """Wait (at most ``timeout`` seconds) for a successful call of ``method`` that matches."""

        def found() -> Call | None:
            return next((c for c in self.calls(method) if predicate is None or predicate(c)), None)

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: found() is not None)
        except TimeoutError:
            made = [(c.method, c.params, c.error) for c in self._state.calls]
            raise AssertionError(
                f"no {method} call matched within {timeout} s; calls: {made}"
            ) from None
        call = found()
        assert call is not None
        return call

    async def wait_until(
        self,
        condition: Callable[[list[Call]], Call | None],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 (a test's bound, not an I/O timeout)
    ) -> Call | None:
        """Wait (at most ``timeout`` seconds) until ``condition(calls)`` finds a call."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: condition(self.calls()) is not None)
        except TimeoutError:
            return None
        return condition(self.calls())

    # -- the server --------------------------------------------------------

    async def _params(
        self, request: web.Request
    ) -> tuple[dict[str, Any], dict[str, bytes], dict[str, str]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, bytes] = {}
        names: dict[str, str] = {}  # the uploads' file names
        if request.content_type == "application/json":
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
            return params, files, names
        if request.can_read_body:
            for key, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                    names[key] = value.filename
                else:
                    params[key] = value
        return {k: decode_param(k, v) for k, v in params.items()}, files, names

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params, files, names = await self._params(request)
        if method.lower() == "getupdates":
            return web.json_response({"ok": True, "result": await self._updates(params)})
        if method.lower() == "getfile" and str(params.get("file_id")) not in self._state.files:
            self.fail_next(method, status=400, description="Bad Request: invalid file_id")
        for failure in self._state.failures:
            if failure.matches(method, params):
                failure.times -= 1
                return await self._fail(method, params, files, failure)
        if method.lower() in WRITING and str(params.get("chat_id")) in self._state.blocked:
            blocked = Failure(method, 403, DEFAULT_DESCRIPTIONS[403], None, None, 1)
            return await self._fail(method, params, files, blocked)
        refusal = refusal_of(method, params)
        if method.lower() == "answercallbackquery":
            query_id = str(params.get("callback_query_id"))
            if query_id in self._state.answered:  # a button press is answered once
                refusal = "Bad Request: " + TOO_OLD
            self._state.answered.add(query_id)
        if refusal is not None:
            return await self._fail(
                method, params, files, Failure(method, 400, refusal, None, None, 1)
            )
        result = self._result(method, params, files, names)
        await self._record(Call(method, params, files, result))
        return web.json_response({"ok": True, "result": result})

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self._state.calls.append(call)
            self._changed.notify_all()

    async def _fail(
        self, method: str, params: dict[str, Any], files: dict[str, bytes], failure: Failure
    ) -> web.Response:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": failure.status,
            "description": failure.description,
        }
        if failure.retry_after is not None:
            body["parameters"] = {"retry_after": failure.retry_after}
        await self._record(Call(method, params, files, error=failure.description))
        return web.json_response(body, status=failure.status)

    async def _updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        wait = min(float(params.get("timeout") or 0), MAX_POLL_SECONDS)
        # As Telegram does: asking from ``offset`` confirms every earlier update.
        self._state.updates = [u for u in self._state.updates if u["update_id"] >= offset]

        def ready() -> bool:
            return bool(self._state.updates) or self._closing

        if wait > 0 and not ready():
            with suppress(TimeoutError):
                async with asyncio.timeout(wait), self._changed:
                    await self._changed.wait_for(ready)
        return self._state.updates[:limit]

    def _new_message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(datetime.now(UTC).timestamp()),
            "chat": chat_of(params["chat_id"]),
            "from": self.me(),
            **content,
        }
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        if "message_thread_id" in params:
            message["message_thread_id"] = params["message_thread_id"]
        return message

    def _edited(self, params: dict[str, Any], **content: Any) -> dict[str, Any] | bool:
        if "inline_message_id" in params:
            return True
        message = {
            "message_id": int(params["message_id"]),
            "date": int(datetime.now(UTC).timestamp()),
            "edit_date": int(datetime.now(UTC).timestamp()),
            "chat": chat_of(params["chat_id"]),
            "from": self.me(),
            **content,
        }
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        return message

    def _upload(
        self, params: dict[str, Any], files: dict[str, bytes], names: dict[str, str], field: str
    ) -> StoredFile:
        value = params.get(field)
        if isinstance(value, str) and value in self._state.files:
            return self._state.files[value]
        key = value[len("attach://") :] if isinstance(value, str) else field
        key = key if key in files else field
        return self.register_file(files.get(key, b""), file_name=names.get(key))

    def _result(
        self, method: str, params: dict[str, Any], files: dict[str, bytes], names: dict[str, str]
    ) -> Any:
        name = method.lower()
        caption = {"caption": params["caption"]} if "caption" in params else {}
        if name == "getme":
            return self.me()
        if name == "sendmessage":
            return self._new_message(params, text=params.get("text", ""))
        if name == "editmessagetext":
            return self._edited(params, text=params.get("text", ""))
        if name in {"editmessagereplymarkup", "editmessagecaption"}:
            return self._edited(params, text="…", **caption)
        if name == "senddocument":
            stored = self._upload(params, files, names, "document")
            document = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_name": stored.file_name or "document",
                "file_size": len(stored.content),
            }
            return self._new_message(params, document=document, **caption)
        if name == "sendphoto":
            stored = self._upload(params, files, names, "photo")
            photo = [
                {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.file_unique_id,
                    "width": 640,
                    "height": 480,
                }
            ]
            return self._new_message(params, photo=photo, **caption)
        if name == "forwardmessage":
            return self._new_message(params, text="(forwarded)")
        if name == "copymessage":
            return {"message_id": next(self._message_ids)}
        if name == "getfile":
            stored = self._state.files[str(params["file_id"])]
            return {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.content),
                "file_path": stored.file_path,
            }
        if name == "getwebhookinfo":
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        return True

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        for stored in self._state.files.values():
            if stored.file_path == path:
                return web.Response(body=stored.content)
        return web.Response(status=404)
