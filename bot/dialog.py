"""The customer dialog in a private chat: choose a kind, answer its questions, prove who you are.

Each step is a state of aiogram's FSM, kept in the database (or Redis), so a
person who comes back after a restart continues where they were. Nothing is
filed until the person confirms the summary; then one call of the request
service files it and the outbox tells the person its reference and deadline.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandStart, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)

from bot.callbacks import (
    CancelPick,
    EvidenceStep,
    KindChoice,
    LanguageChoice,
    NewCode,
    SummaryChoice,
)
from bot.config import BotConfig
from bot.language import remember_language
from bot.texts import Texts
from workflows.errors import DomainError, NotAllowed, RequestNotFound
from workflows.i18n import LANGUAGES, format_date, kind_hint, kind_name, status_name
from workflows.identity import (
    CodeOutcome,
    InvalidIdentifier,
    contact_phone,
    normalize_email,
    normalize_phone,
)
from workflows.kinds import CLASSIFIED_KINDS, RequestKind
from workflows.privacy.masking import mask_email
from workflows.requests.intake import SharedContact
from workflows.requests.limits import TooManyCodes, TooManyOpen
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.snapshots import Actor, RequestView

log = logging.getLogger(__name__)

# What each kind asks, in order: (field, question). The kinds table says what is
# required; a test checks that these questions cover it.
QUESTIONS: dict[RequestKind, tuple[tuple[str, str], ...]] = {
    RequestKind.ACCESS: (),
    RequestKind.RECTIFY: (("correction", "ask.correction"),),
    RequestKind.DELETE_ACCOUNT: (),
    RequestKind.WITHDRAW_CONSENT: (
        ("full_name", "ask.full_name"),
        ("data_concerned", "ask.data_concerned"),
        ("contact", "ask.contact"),
    ),
    RequestKind.UNSUBSCRIBE: (),
    RequestKind.BLOCK: (("text", "ask.text.block"),),
    RequestKind.DESTROY_UNLAWFUL: (
        ("data_concerned", "ask.data_concerned.destroy"),
        ("text", "ask.text.destroy_unlawful"),
    ),
    RequestKind.COMPLAINT: (("text", "ask.text.complaint"),),
}
# Kinds whose clock starts when supporting documents are in: they may bring files.
EVIDENCE_KINDS = frozenset({RequestKind.RECTIFY, RequestKind.DESTROY_UNLAWFUL})
FIELD_LABELS = ("correction", "full_name", "data_concerned", "phone", "email", "postal_address")
_PHONE_LIKE = re.compile(r"^[\d\s()+\-]{6,}$")


class Dialog(StatesGroup):
    kind = State()
    field = State()
    evidence = State()
    identity = State()
    summary = State()
    code = State()


def setup(config: BotConfig) -> Router:
    router = Router(name=__name__)
    router.message.filter(F.chat.type == "private")
    router.callback_query.filter(F.message.chat.type == "private")

    # -- commands work in every state ---------------------------------------

    @router.message(CommandStart())
    async def start(
        message: Message, state: FSMContext, texts: Texts, service: RequestService
    ) -> None:
        assert message.from_user is not None
        limit = service.limits.max_open_requests
        at_limit = await service.open_count(telegram_user_id=message.from_user.id) >= limit
        await state.clear()
        if not at_limit:
            # Checked here for this dialog: the kind's button need not count again.
            await state.set_state(Dialog.kind)
            await state.set_data({"open_checked": True})
        await message.answer(texts("start.greeting"), reply_markup=ReplyKeyboardRemove())
        if at_limit:
            await message.answer(texts("limits.too_many_open", limit=limit))
            return
        await _offer_kinds(message, state, texts)

    @router.message(Command("help"))
    async def help_(message: Message, texts: Texts) -> None:
        await message.answer(texts("help"))

    @router.message(Command("privacy"))
    async def privacy(message: Message, texts: Texts) -> None:
        await message.answer(texts("privacy"))

    @router.message(Command("language"))
    async def language(message: Message, texts: Texts) -> None:
        names = {"kk": "Қазақша", "ru": "Русский", "en": "English"}
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(
                        text=names[code], callback_data=LanguageChoice(code=code).pack()
                    )
                    for code in LANGUAGES
                ]
            ]
        )
        await message.answer(texts("language.pick"), reply_markup=keyboard)

    @router.callback_query(LanguageChoice.filter())
    async def language_chosen(
        query: CallbackQuery,
        callback_data: LanguageChoice,
        bot: Bot,
        fsm_storage: BaseStorage,
    ) -> None:
        if callback_data.code not in LANGUAGES:
            await query.answer()
            return
        await remember_language(fsm_storage, bot, query.from_user.id, callback_data.code)
        await query.answer()
        chosen = Texts(callback_data.code, config.info)
        if isinstance(query.message, Message):
            await query.message.edit_text(chosen("language.set"))

    @router.message(Command("status"))
    async def status(
        message: Message, texts: Texts, service: RequestService, language: str
    ) -> None:
        assert message.from_user is not None
        views = await service.list_requests(telegram_user_id=message.from_user.id)
        if not views:
            await message.answer(texts("status.none"))
            return
        lines = [texts("status.title")]
        for view in views[-20:]:
            lines.append(
                texts(
                    "status.line",
                    reference=view.reference,
                    kind=html.escape(kind_name(language, view.kind)),
                    status=html.escape(status_name(language, view.status)),
                    due=_due(view, texts, service),
                )
            )
        await message.answer("\n".join(lines))

    @router.message(Command("cancel"))
    async def cancel(message: Message, texts: Texts, service: RequestService) -> None:
        assert message.from_user is not None
        views = await service.list_requests(telegram_user_id=message.from_user.id, open_only=True)
        if not views:
            await message.answer(texts("cancel.none"))
            return
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(
                        text=view.reference,
                        callback_data=CancelPick(reference=view.reference).pack(),
                    )
                ]
                for view in views[:20]
            ]
        )
        await message.answer(texts("cancel.pick"), reply_markup=keyboard)

    @router.callback_query(CancelPick.filter())
    async def cancel_pick(
        query: CallbackQuery,
        callback_data: CancelPick,
        texts: Texts,
        service: RequestService,
    ) -> None:
        reference = callback_data.reference
        try:
            owner = (await service.get(reference)).subject_telegram_user_id
            if owner != query.from_user.id:
                raise NotAllowed("this request belongs to someone else")
        except (NotAllowed, RequestNotFound):
            # A forged or mistyped reference: nothing is shown of it and nothing changes.
            await query.answer(texts("limits.not_yours"), show_alert=True)
            return
        await query.answer()
        if not isinstance(query.message, Message):
            return
        if callback_data.keep:
            await query.message.edit_text(texts("cancel.kept", reference=reference))
            return
        if not callback_data.confirm:
            keyboard = InlineKeyboardMarkup(
                inline_keyboard=[
                    [
                        InlineKeyboardButton(
                            text=texts("cancel.yes"),
                            callback_data=CancelPick(reference=reference, confirm=True).pack(),
                        ),
                        InlineKeyboardButton(
                            text=texts("cancel.no"),
                            callback_data=CancelPick(reference=reference, keep=True).pack(),
                        ),
                    ]
                ]
            )
            await query.message.edit_text(
                texts("cancel.confirm", reference=reference), reply_markup=keyboard
            )
            return
        try:
            await service.cancel(reference, Actor.person_telegram(query.from_user.id))
        except DomainError:
            await query.message.edit_text(texts("cancel.failed", reference=reference))
            return
        config.outbox_wake.set()
        await query.message.edit_reply_markup(reply_markup=None)

    # -- choosing the kind ----------------------------------------------------

    @router.callback_query(KindChoice.filter())
    async def kind_chosen(
        query: CallbackQuery,
        callback_data: KindChoice,
        state: FSMContext,
        texts: Texts,
        service: RequestService,
    ) -> None:
        try:
            kind = RequestKind(callback_data.kind)
        except ValueError:
            kind = RequestKind.UNCLASSIFIED
        if kind not in CLASSIFIED_KINDS:  # the dialog files only a kind the person chose
            await query.answer(texts("limits.button_unknown"))
            return
        await query.answer()
        checked = (await state.get_data()).get("open_checked", False)
        if isinstance(query.message, Message):
            await query.message.edit_reply_markup(reply_markup=None)
            if not checked and await _at_open_limit(
                query.message, texts, service, query.from_user.id
            ):
                await state.clear()
                return
        await state.set_state(Dialog.field)
        await state.set_data(
            {
                "kind": kind.value,
                "queue": [name for name, _ in QUESTIONS[kind]],
                "fields": {},
                "evidence": [],
                "evidence_asked": False,
            }
        )
        assert isinstance(query.message, Message)
        await _next_step(query.message, state, texts, config)

    @router.message(StateFilter(Dialog.kind))
    async def kind_expected(message: Message, state: FSMContext, texts: Texts) -> None:
        await message.answer(texts("expect.button"))
        await _offer_kinds(message, state, texts)

    # -- the kind's questions -------------------------------------------------

    @router.message(StateFilter(Dialog.field), F.text)
    async def field_answer(message: Message, state: FSMContext, texts: Texts) -> None:
        text = (message.text or "").strip()
        if len(text) > config.max_text:
            await message.answer(texts("too_long", limit=config.max_text))
            return
        data = await state.get_data()
        queue: list[str] = list(data.get("queue", []))
        if not queue:
            await _next_step(message, state, texts, config)
            return
        name = queue.pop(0)
        fields: dict[str, Any] = dict(data.get("fields", {}))
        if name == "contact":
            fields.update(_classify_contact(text))
        elif text:
            fields[name] = text
        else:
            queue.insert(0, name)
        await state.update_data(queue=queue, fields=fields)
        await _next_step(message, state, texts, config)

    @router.message(StateFilter(Dialog.field))
    async def field_not_text(message: Message, state: FSMContext, texts: Texts) -> None:
        data = await state.get_data()
        queue = data.get("queue", [])
        kind = RequestKind(data["kind"])
        question = dict(QUESTIONS[kind]).get(queue[0], "") if queue else ""
        await message.answer(texts("expect.text", question=texts(question) if question else ""))

    # -- optional supporting documents ---------------------------------------

    @router.message(StateFilter(Dialog.evidence), F.photo | F.document)
    async def evidence_file(message: Message, state: FSMContext, texts: Texts) -> None:
        data = await state.get_data()
        files: list[dict[str, Any]] = list(data.get("evidence", []))
        if len(files) >= config.max_files:
            await message.answer(texts("evidence.limit", limit=config.max_files))
            return
        if message.document is not None:
            size = message.document.file_size or 0
            item = {
                "file_id": message.document.file_id,
                "name": message.document.file_name or "document",
                "content_type": message.document.mime_type or "application/octet-stream",
            }
        else:
            assert message.photo
            photo = message.photo[-1]
            size = photo.file_size or 0
            item = {
                "file_id": photo.file_id,
                "name": f"photo-{len(files) + 1}.jpg",
                "content_type": "image/jpeg",
            }
        if size > config.max_file_mb * 1024 * 1024:
            await message.answer(
                texts("evidence.too_big", limit=config.max_file_mb),
                reply_markup=_evidence_keyboard(texts, done=bool(files)),
            )
            return
        files.append(item)
        await state.update_data(evidence=files)
        await message.answer(
            texts("evidence.received", name=html.escape(str(item["name"]))),
            reply_markup=_evidence_keyboard(texts, done=True),
        )

    @router.callback_query(StateFilter(Dialog.evidence), EvidenceStep.filter())
    async def evidence_step(query: CallbackQuery, state: FSMContext, texts: Texts) -> None:
        await query.answer()
        if isinstance(query.message, Message):
            await query.message.edit_reply_markup(reply_markup=None)
            await _next_step(query.message, state, texts, config)

    @router.message(StateFilter(Dialog.evidence))
    async def evidence_expected(message: Message, state: FSMContext, texts: Texts) -> None:
        files = (await state.get_data()).get("evidence", [])
        # A sticker, a voice message, a video, a location...: say plainly what is taken.
        msgid = "ask.evidence" if message.text is not None else "limits.unsupported.file"
        await message.answer(texts(msgid), reply_markup=_evidence_keyboard(texts, done=bool(files)))

    # -- who is asking ----------------------------------------------------------

    @router.message(StateFilter(Dialog.identity), F.contact)
    async def contact_shared(
        message: Message, state: FSMContext, texts: Texts, service: RequestService
    ) -> None:
        assert message.contact is not None
        assert message.from_user is not None
        if message.contact.user_id != message.from_user.id:
            await message.answer(texts("identity.not_own"), reply_markup=_contact_keyboard(texts))
            return
        try:
            phone = contact_phone(message.contact.phone_number)
        except InvalidIdentifier:
            await message.answer(texts("identity.not_own"), reply_markup=_contact_keyboard(texts))
            return
        reference = (await state.get_data()).get("reference")
        if reference:  # a request filed already waits for this proof
            try:
                await service.verify_by_contact(
                    str(reference),
                    sender_user_id=message.from_user.id,
                    contact_user_id=message.contact.user_id,
                    phone=phone,
                )
            except DomainError:
                log.warning("verifying a filed request by a shared contact was refused")
                await message.answer(texts("error.try_later"), reply_markup=ReplyKeyboardRemove())
                await state.clear()
                return
            await state.clear()
            config.outbox_wake.set()
            await message.answer(texts("code.ok"), reply_markup=ReplyKeyboardRemove())
            return
        # The card's own user id is kept with its number: the request service, not this
        # dialog's memory, decides at filing whether the card was the sender's.
        proof = {"method": "contact", "phone": phone, "user_id": message.contact.user_id}
        await state.update_data(proof=proof)
        await _next_step(message, state, texts, config)

    @router.message(StateFilter(Dialog.identity), F.text)
    async def identity_text(
        message: Message, state: FSMContext, texts: Texts, service: RequestService
    ) -> None:
        assert message.from_user is not None
        text = (message.text or "").strip()
        if "@" in text:
            try:
                email = normalize_email(text)
            except InvalidIdentifier:
                await message.answer(texts("identity.bad_email"))
                return
            reference = (await state.get_data()).get("reference")
            if reference:  # a request filed already waits for this proof
                try:
                    await _ask_for_code(
                        message.answer,
                        state,
                        texts,
                        service,
                        config,
                        str(reference),
                        email,
                        message.from_user.id,
                    )
                except DomainError:
                    log.warning("a code for a filed request was refused")
                    await state.clear()
                    await message.answer(texts("error.try_later"))
                return
            await state.update_data(proof={"method": "email", "email": email})
            await _next_step(message, state, texts, config)
        elif _PHONE_LIKE.match(text):
            await message.answer(
                texts("identity.typed_phone"), reply_markup=_contact_keyboard(texts)
            )
        else:
            await message.answer(texts("identity.expect"), reply_markup=_contact_keyboard(texts))

    @router.message(StateFilter(Dialog.identity))
    async def identity_other(message: Message, texts: Texts) -> None:
        await message.answer(texts("identity.expect"), reply_markup=_contact_keyboard(texts))

    # -- the summary --------------------------------------------------------------

    @router.callback_query(StateFilter(Dialog.summary), SummaryChoice.filter())
    async def summary_choice(
        query: CallbackQuery,
        callback_data: SummaryChoice,
        state: FSMContext,
        texts: Texts,
        service: RequestService,
        bot: Bot,
        language: str,
    ) -> None:
        await query.answer()
        if not isinstance(query.message, Message):
            return
        if callback_data.action not in ("confirm", "edit", "cancel"):
            return
        data = await state.get_data()
        if callback_data.action == "cancel":
            await state.clear()
            await query.message.edit_text(texts("dialog.cancelled"))
            return
        if callback_data.action == "edit":
            kind = RequestKind(data["kind"])
            await query.message.edit_reply_markup(reply_markup=None)
            await state.set_state(Dialog.field)
            await state.update_data(
                queue=[name for name, _ in QUESTIONS[kind]],
                fields={},
                evidence=[],
                evidence_asked=False,
            )
            await _next_step(query.message, state, texts, config)
            return
        try:  # _file edits the summary, which takes its buttons away
            await _file(query, data, state, texts, service, bot, language, config)
        except DomainError:
            log.exception("filing a request failed")
            await query.message.answer(texts("error.try_later"))

    @router.message(StateFilter(Dialog.summary))
    async def summary_expected(message: Message, texts: Texts) -> None:
        await message.answer(texts("expect.button"))

    # -- the e-mailed code -------------------------------------------------------

    @router.message(StateFilter(Dialog.code), F.text)
    async def code_typed(
        message: Message, state: FSMContext, texts: Texts, service: RequestService
    ) -> None:
        assert message.from_user is not None
        attempt = re.sub(r"[\s\-]", "", message.text or "")
        if not attempt.isdigit():
            await message.answer(texts("code.format"))
            return
        reference = str((await state.get_data()).get("reference"))
        check = await service.verify_by_code(
            reference, attempt, Actor.person_telegram(message.from_user.id)
        )
        config.outbox_wake.set()
        if check.outcome is CodeOutcome.OK:
            await state.clear()
            await message.answer(texts("code.ok"))
        elif check.outcome is CodeOutcome.WRONG:
            await message.answer(texts("code.wrong", left=check.tries_left))
        else:
            msgid = "code.expired" if check.outcome is CodeOutcome.EXPIRED else "code.dead"
            await message.answer(texts(msgid), reply_markup=_new_code_keyboard(texts, reference))

    @router.callback_query(StateFilter(Dialog.code), NewCode.filter())
    async def code_again(
        query: CallbackQuery,
        callback_data: NewCode,
        state: FSMContext,
        texts: Texts,
        service: RequestService,
    ) -> None:
        data = await state.get_data()
        proof = data.get("proof") or {}
        email = proof.get("email")
        if callback_data.reference != data.get("reference"):
            await query.answer(texts("limits.button_unknown"))
            return
        await query.answer()
        if not email or not isinstance(query.message, Message):
            return
        try:
            await service.send_email_code(
                callback_data.reference, Actor.person_telegram(query.from_user.id), email
            )
        except TooManyCodes as exc:
            await query.message.answer(
                texts("limits.codes", limit=exc.limit, minutes=exc.minutes),
                reply_markup=_new_code_keyboard(texts, callback_data.reference),
            )
            return
        except DomainError:
            await query.message.answer(texts("error.try_later"))
            return
        config.outbox_wake.set()
        await query.message.edit_text(texts("code.sent", email=html.escape(mask_email(email))))

    @router.message(StateFilter(Dialog.code))
    async def code_expected(message: Message, texts: Texts) -> None:
        await message.answer(texts("code.format"))

    # -- outside any dialog ----------------------------------------------------

    @router.message(StateFilter(None), F.text | F.photo | F.document)
    async def outside(
        message: Message,
        texts: Texts,
        service: RequestService,
        bot: Bot,
    ) -> None:
        assert message.from_user is not None
        views = await service.list_requests(telegram_user_id=message.from_user.id, open_only=True)
        waiting = [v for v in views if v.status == "awaiting_info"]
        target = waiting[0] if waiting else None
        if target is None:
            await message.answer(texts("fallback"))
            return
        text = (message.text or message.caption or "").strip()
        if len(text) > config.max_text:
            await message.answer(texts("too_long", limit=config.max_text))
            return
        if _file_size(message) > config.max_file_mb * 1024 * 1024:
            # Nothing is added: a reply without its file would read as complete.
            await message.answer(texts("limits.file_too_big", limit=config.max_file_mb))
            return
        evidence = await _download_one(bot, message, config)
        await service.attach(
            target.reference,
            Actor.person_telegram(message.from_user.id),
            body=text or None,
            external_id=f"tg:{message.chat.id}:{message.message_id}",
            evidence=evidence,
        )
        config.outbox_wake.set()
        await message.answer(texts("reply.added", reference=target.reference))

    @router.message()
    async def anything_else(message: Message, texts: Texts) -> None:
        # Only what the handlers above do not take gets here: stickers, voice, video, places.
        await message.answer(texts("limits.unsupported" if message.text is None else "fallback"))

    return router


# -- steps ----------------------------------------------------------------------


async def _at_open_limit(
    message: Message, texts: Texts, service: RequestService, user_id: int
) -> bool:
    """Says so when the person has as many requests open as the desk takes at once."""
    limit = service.limits.max_open_requests
    if await service.open_count(telegram_user_id=user_id) < limit:
        return False
    await message.answer(texts("limits.too_many_open", limit=limit))
    return True


def _file_size(message: Message) -> int:
    if message.document is not None:
        return message.document.file_size or 0
    if message.photo:
        return message.photo[-1].file_size or 0
    return 0


async def _offer_kinds(message: Message, state: FSMContext, texts: Texts) -> None:
    lines = [texts("start.choose"), ""]
    buttons = []
    for kind in CLASSIFIED_KINDS:
        name = kind_name(texts.language, kind.value)
        lines.append(
            f"• <b>{html.escape(name)}</b> — {html.escape(kind_hint(texts.language, kind.value))}"
        )
        buttons.append(
            [InlineKeyboardButton(text=name, callback_data=KindChoice(kind=kind.value).pack())]
        )
    await state.set_state(Dialog.kind)
    await message.answer(
        "\n".join(lines), reply_markup=InlineKeyboardMarkup(inline_keyboard=buttons)
    )


async def _next_step(message: Message, state: FSMContext, texts: Texts, config: BotConfig) -> None:
    """Asks whatever the dialog still needs, or shows the summary when it has it all."""
    data = await state.get_data()
    kind = RequestKind(data["kind"])
    queue: list[str] = data.get("queue", [])
    if queue:
        await state.set_state(Dialog.field)
        await message.answer(texts(dict(QUESTIONS[kind])[queue[0]]))
        return
    if kind in EVIDENCE_KINDS and not data.get("evidence_asked"):
        await state.update_data(evidence_asked=True)
        await state.set_state(Dialog.evidence)
        await message.answer(texts("ask.evidence"), reply_markup=_evidence_keyboard(texts, False))
        return
    if not data.get("proof"):
        await state.set_state(Dialog.identity)
        await message.answer(texts("identity.ask"), reply_markup=_contact_keyboard(texts))
        return
    await state.set_state(Dialog.summary)
    await message.answer(_summary(data, texts), reply_markup=_summary_keyboard(texts))


def _summary(data: dict[str, Any], texts: Texts) -> str:
    fields: dict[str, Any] = data.get("fields", {})
    lines = []
    for name in (*FIELD_LABELS, "text"):
        value = fields.get(name)
        if value:
            lines.append(f"{texts('field.' + name)}: {html.escape(str(value))}")
    files = data.get("evidence", [])
    if files:
        lines.append(texts("field.attachments", count=len(files)))
    proof = data.get("proof") or {}
    if proof.get("method") == "email":
        identity = texts("identity.email", email=html.escape(mask_email(proof["email"])))
    else:
        identity = texts("identity.phone")
    details = "\n".join(lines) + ("\n" if lines else "")
    return texts(
        "summary",
        kind=html.escape(kind_name(texts.language, data["kind"])),
        details=details,
        identity=identity,
    )


async def _file(
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
    user_id = query.from_user.id
    proof = data.get("proof") or {}
    contact = (
        SharedContact(user_id=_card_owner(proof), phone=str(proof["phone"]))
        if proof.get("method") == "contact"
        else None
    )
    # The summary's own id: a press again after a failure half-way (filed, the rest
    # not done) finds the request filed already instead of filing it twice.
    summary_id = f"tg:{query.message.chat.id}:{query.message.message_id}"
    filed = await service.reference_for_message(summary_id)
    try:
        if filed is not None:
            view = await service.get(filed)
        else:
            view = await _open(query, data, service, bot, language, summary_id, contact)
    except TooManyOpen as exc:
        # The dialog stays at its summary: once one request is closed or cancelled, Send works.
        await query.message.edit_reply_markup(reply_markup=None)
        await query.message.answer(
            texts("limits.too_many_open", limit=exc.limit), reply_markup=_summary_keyboard(texts)
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
        await query.message.answer(texts("identity.expect"), reply_markup=_contact_keyboard(texts))
        return
    if contact is not None:
        await state.clear()
        config.outbox_wake.set()
        await query.message.edit_text(texts("summary.sent"))
        return
    await _ask_for_code(
        query.message.edit_text,
        state,
        texts,
        service,
        config,
        view.reference,
        str(proof["email"]),
        user_id,
    )


def _card_owner(proof: dict[str, Any]) -> int | None:
    """The user id of the contact card a proof came from, as Telegram gave it; else None."""
    owner = proof.get("user_id")
    return owner if isinstance(owner, int) and not isinstance(owner, bool) else None


async def _ask_for_code(
    say: Callable[..., Awaitable[object]],
    state: FSMContext,
    texts: Texts,
    service: RequestService,
    config: BotConfig,
    reference: str,
    email: str,
    user_id: int,
) -> None:
    """E-mails a code for the filed request and waits for it; ``say`` tells the person."""
    await state.set_state(Dialog.code)
    await state.update_data(reference=reference, proof={"method": "email", "email": email})
    config.outbox_wake.set()
    try:
        await service.send_email_code(reference, Actor.person_telegram(user_id), email)
    except TooManyCodes as exc:
        # Filed, but the code must wait: the button asks for it again later.
        await say(
            texts("limits.codes", limit=exc.limit, minutes=exc.minutes),
            reply_markup=_new_code_keyboard(texts, reference),
        )
        return
    config.outbox_wake.set()
    await say(texts("code.sent", email=html.escape(mask_email(email))))


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
        await _download(bot, str(f["file_id"]), str(f["name"]), str(f["content_type"]))
        for f in data.get("evidence", [])
    ]
    body = "\n".join(str(v) for k, v in fields.items() if k in ("correction", "text") and v)
    return await service.open_request(
        kind=data["kind"],
        channel="telegram",
        language=language,
        fields=fields,
        telegram_user_id=query.from_user.id,
        body=body or None,
        external_id=external_id,
        evidence=evidence,
        contact=contact,  # filed and verified in one go
    )


async def _download(bot: Bot, file_id: str, name: str, content_type: str) -> Evidence:
    file = await bot.get_file(file_id)
    assert file.file_path is not None
    buffer = await bot.download_file(file.file_path)
    assert buffer is not None
    return Evidence(name, content_type, buffer.read())


async def _download_one(bot: Bot, message: Message, config: BotConfig) -> list[Evidence]:
    limit = config.max_file_mb * 1024 * 1024
    if message.document is not None and (message.document.file_size or 0) <= limit:
        document = message.document
        return [
            await _download(
                bot,
                document.file_id,
                document.file_name or "document",
                document.mime_type or "application/octet-stream",
            )
        ]
    if message.photo and (message.photo[-1].file_size or 0) <= limit:
        return [await _download(bot, message.photo[-1].file_id, "photo.jpg", "image/jpeg")]
    return []


def _classify_contact(text: str) -> dict[str, str]:
    """The policy wants a phone, an e-mail or a postal address: find out which was given."""
    if "@" in text:
        try:
            return {"email": normalize_email(text)}
        except InvalidIdentifier:
            pass
    if _PHONE_LIKE.match(text):
        try:
            return {"phone": normalize_phone(text)}
        except InvalidIdentifier:
            pass
    return {"postal_address": text}


def _due(view: RequestView, texts: Texts, service: RequestService) -> str:
    if view.due_at is None:
        return texts("status.no_due")
    return html.escape(format_date(texts.language, service.calendar.local_date(view.due_at)))


# -- keyboards ----------------------------------------------------------------------


def _contact_keyboard(texts: Texts) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=texts("identity.button"), request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


def _evidence_keyboard(texts: Texts, done: bool) -> InlineKeyboardMarkup:
    action = "done" if done else "skip"
    label = texts("evidence.done") if done else texts("evidence.skip")
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=label, callback_data=EvidenceStep(action=action).pack())]
        ]
    )


def _summary_keyboard(texts: Texts) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts("summary.confirm"),
                    callback_data=SummaryChoice(action="confirm").pack(),
                )
            ],
            [
                InlineKeyboardButton(
                    text=texts("summary.edit"), callback_data=SummaryChoice(action="edit").pack()
                ),
                InlineKeyboardButton(
                    text=texts("summary.cancel"),
                    callback_data=SummaryChoice(action="cancel").pack(),
                ),
            ],
        ]
    )


def _new_code_keyboard(texts: Texts, reference: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts("code.resend"), callback_data=NewCode(reference=reference).pack()
                )
            ]
        ]
    )
