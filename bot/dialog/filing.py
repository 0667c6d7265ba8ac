"""Filing the confirmed request: one call of the request service, then the proof it still needs.

A shared contact files and verifies in one go; an e-mail files, then a code is sent.
"""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.config import BotConfig
from bot.dialog import keyboards
from bot.dialog.files import download
from bot.dialog.flow import ask_for_code
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.requests.dialog_rules import request_body
from workflows.requests.intake import SharedContact
from workflows.requests.limits import TooManyOpen
from workflows.requests.service import RequestService
from workflows.snapshots import RequestView


async def file_request(
    query: CallbackQuery,
    data: dict[str, Any],
    state: FSMContext,
    texts: Texts,
    service: RequestService,
    bot: Bot,
    language: str,
    config: BotConfig,
) -> None:
    """Files the confirmed request and proves the person's identity with what they gave."""
    assert isinstance(query.message, Message)
    proof = data.get("proof") or {}
    contact = (
        SharedContact(user_id=_card_owner(proof), phone=str(proof["phone"]))
        if proof.get("method") == "contact"
        else None
    )
    # The summary's own id: a press again after a failure half-way (filed, the rest
    # not done) finds the request filed already instead of filing it twice (``once``).
    summary_id = f"tg:{query.message.chat.id}:{query.message.message_id}"
    try:
        view = await _open(query, data, service, bot, language, summary_id, contact)
    except TooManyOpen as exc:
        # The dialog stays at its summary: once one request is closed or cancelled, Send works.
        await query.message.edit_reply_markup(reply_markup=None)
        await query.message.answer(
            texts("limits.too_many_open", limit=exc.limit), reply_markup=keyboards.summary(texts)
        )
        return
    # The outbox is woken only once the dialog has moved on: its messages (the reference,
    # the deadline) must not reach the person before the state they belong to.
    if contact is not None and view.verified_by is None:
        # The service did not take the stored card as the sender's own (see
        # RequestService.open_request): filed, unverified, and the person is asked
        # for a proof of this request.
        await state.set_state(Dialog.identity)
        await state.set_data({"reference": view.reference})
        config.outbox_wake.set()
        await query.message.edit_text(texts("identity.refused", reference=view.reference))
        await query.message.answer(texts("identity.expect"), reply_markup=keyboards.contact(texts))
        return
    if contact is not None:
        await state.clear()
        config.outbox_wake.set()
        await query.message.edit_text(texts("summary.sent"))
        return
    await ask_for_code(
        query.message.edit_text,
        state,
        texts,
        service,
        config,
        view.reference,
        str(proof["email"]),
        query.from_user.id,
    )


def _card_owner(proof: dict[str, Any]) -> int | None:
    """The user id of the contact card a proof came from, as Telegram gave it; else None."""
    owner = proof.get("user_id")
    return owner if isinstance(owner, int) and not isinstance(owner, bool) else None


async def _open(
    query: CallbackQuery,
    data: dict[str, Any],
    service: RequestService,
    bot: Bot,
    language: str,
    external_id: str,
    contact: SharedContact | None,
) -> RequestView:
    """Files the dialog's request with its files (verified at once by a shared contact)."""
    fields: dict[str, Any] = dict(data.get("fields", {}))
    evidence = [
        await download(bot, str(f["file_id"]), str(f["name"]), str(f["content_type"]))
        for f in data.get("evidence", [])
    ]
    return await service.open_request(
        kind=data["kind"],
        channel="telegram",
        language=language,
        fields=fields,
        telegram_user_id=query.from_user.id,
        body=request_body(fields),
        external_id=external_id,
        evidence=evidence,
        contact=contact,  # filed and verified in one go
        once=True,
    )
