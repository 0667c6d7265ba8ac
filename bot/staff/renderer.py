"""How every outbox message becomes a Telegram message: a request's staff card, or a notice."""

from __future__ import annotations

import contextlib
import html

from bot.config import BotConfig
from bot.delivery import Rendered
from bot.staff.cards import PREVIEWED, card_keyboard, card_text, needed_approvals
from bot.staff.post import post_letter
from bot.texts import Texts
from workflows.clock import Clock
from workflows.errors import RequestNotFound
from workflows.fulfilment.work import Fulfilment
from workflows.i18n import render_notification
from workflows.kinds import RequestKind
from workflows.outbox.queue import Audience, Channel, OutgoingMessage
from workflows.requests.service import RequestService
from workflows.snapshots import RequestView


class OutboxRenderer:
    """Turns an outbox row into the Telegram message that delivers it."""

    def __init__(
        self,
        service: RequestService,
        config: BotConfig,
        clock: Clock,
        fulfilment: Fulfilment,
    ) -> None:
        self._service = service
        self._config = config
        self._clock = clock
        self._fulfilment = fulfilment

    async def card(self, reference: str) -> Rendered:
        # One read of the request for the whole card (names of files only, never the files),
        # with what the desk holds about the person when the card previews an access report.
        facts = await self._service.card_facts(reference, holdings_if=self._previewed)
        view, attachments = facts.view, facts.attachments
        texts = Texts(self._config.staff_language, self._config.info)
        preview = None
        if self._previewed(view):
            preview = await self._fulfilment.preview_of(facts)
        text = card_text(
            view,
            texts,
            self._service.calendar,
            self._clock.now(),
            attachments,
            kinds=self._service.kinds,
            approvals_needed=needed_approvals(view),
            preview=preview,
            # The person is on the staff list: not theirs to approve (workflows.requests.approvals).
            filed_by_staff=self._config.is_staff(view.subject_telegram_user_id),
        )
        return Rendered(
            text,
            card_keyboard(view, texts),
            card_request_id=view.id,
            card_known=True,
            card_at=facts.card_at,
        )

    def _previewed(self, view: RequestView) -> bool:
        """Whether the card of ``view`` shows a preview of the work (kinds.toml's ``preview``)."""
        spec = self._service.kinds.get(RequestKind(view.kind))
        return spec is not None and spec.preview and view.status in PREVIEWED

    async def __call__(self, message: OutgoingMessage) -> Rendered:
        if message.template == "staff_card" and message.reference:
            return await self.card(message.reference)
        if message.channel is Channel.POST and message.reference:
            view = await self._service.get(message.reference)
            texts = Texts(self._config.staff_language, self._config.info)
            documents = await self._documents(message)
            return post_letter(message, view, texts, self._config.info, documents)
        if message.audience is Audience.SUBJECT:
            language = message.language
        else:
            language = self._config.staff_language
        context = self._config.info.context(language)
        note = render_notification(
            message.template, language, message.params, escape=html.escape, context=context
        )
        thread = None
        if message.audience is Audience.STAFF_GROUP and message.reference:
            with contextlib.suppress(RequestNotFound):
                thread = (await self._service.get(message.reference)).id
        documents = await self._documents(message)
        return Rendered(note.text, thread_request_id=thread, documents=documents)

    async def _documents(self, message: OutgoingMessage) -> tuple[tuple[str, bytes], ...]:
        """The files that go with a message (an access report), as Telegram sends them."""
        ids = message.params.get("documents")
        if not ids or not message.reference:
            return ()
        files = await self._service.documents(message.reference, [int(i) for i in ids])
        return tuple((item.filename, item.data) for item in files)
