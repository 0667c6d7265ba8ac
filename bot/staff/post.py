"""Letters to post: a request received by post is answered on paper, printed from the staff group.

The core routes every notice of a request by post to the ``post`` channel
(:func:`workflows.outbox.queue.subject_route`). This port delivers such a
notice to the staff group, under the request's card: who it goes to (the name
and postal address of the letter), then the notice in the person's language,
with the desk's signature, to print and send; files (an access report) follow
it. The outbox records it as sent once the staff group has it, and
``aina-dsr requests show`` lists it among the request's letters to post.
"""

from __future__ import annotations

import html
from dataclasses import replace

from bot.delivery import Rendered, TelegramPort
from bot.texts import Texts
from workflows.i18n import DeskInfo
from workflows.outbox.queue import Audience, Channel, DeliveryReceipt, OutgoingMessage
from workflows.requests.post import letter_text
from workflows.snapshots import RequestView


class PostPort:
    """The outbox's way out for letters by post: the staff group, through the Telegram port."""

    channel = Channel.POST

    def __init__(self, telegram: TelegramPort) -> None:
        self._telegram = telegram

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt:
        # The renderer tells a letter by its channel; the staff group is where it goes.
        return await self._telegram.deliver(replace(message, audience=Audience.STAFF_GROUP))


def post_letter(
    message: OutgoingMessage,
    view: RequestView,
    texts: Texts,
    info: DeskInfo,
    documents: tuple[tuple[str, bytes], ...],
) -> Rendered:
    """The staff group's message for one letter to post, under the request's card."""
    heading = texts(
        "staff.post_letter",
        reference=view.reference,
        name=html.escape(str(view.fields.get("full_name", ""))),
        address=html.escape(str(view.fields.get("postal_address", ""))),
    )
    body = html.escape(letter_text(message.template, message.language, message.params, info))
    return Rendered(f"{heading}\n\n{body}", thread_request_id=view.id, documents=documents)
