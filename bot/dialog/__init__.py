"""The customer dialog in a private chat: choose a kind, answer its questions, prove who you are.

Each step is a state of aiogram's FSM, kept in the database (or Redis), so a
person who comes back after a restart continues where they were. Nothing is
filed until the person confirms the summary; then one call of the request
service files it and the outbox tells the person its reference and deadline.

One module per step, each with its own router; :func:`setup` puts them under one
router for private chats, in the order an update is tried: the commands work in
every state, then the step the person is at, then the fallbacks. What handlers
need (the request service, the bot's config, the texts) comes from the
dispatcher's data as their parameters.
"""

from __future__ import annotations

from aiogram import F, Router

from bot.dialog import (
    about,
    cancel,
    code,
    evidence,
    fallbacks,
    fields,
    identity,
    kind,
    language,
    start,
    status,
    summary,
)

# Commands first (they work in every state), then the steps in the dialog's order.
STEPS = (start, about, language, status, cancel, kind, fields, evidence, identity, summary, code)


def setup() -> Router:
    """The dialog's routers, made anew, under one router for private chats.

    Made per call because aiogram attaches a router to one parent only, and a process
    may build several dispatchers (the tests, replicas side by side); each step
    module's ``setup()`` only registers its module-level handlers.
    """
    router = Router(name=__name__)
    router.message.filter(F.chat.type == "private")
    router.callback_query.filter(F.message.chat.type == "private")
    router.include_routers(*(step.setup() for step in STEPS), fallbacks.setup())
    return router
