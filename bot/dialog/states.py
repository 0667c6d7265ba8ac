"""The steps of the customer dialog as aiogram FSM states (stored as ``Dialog:<step>``)."""

from __future__ import annotations

from aiogram.fsm.state import State, StatesGroup


class Dialog(StatesGroup):
    kind = State()
    field = State()
    evidence = State()
    identity = State()
    summary = State()
    code = State()
