"""What the inline buttons carry: small typed payloads (aiogram CallbackData)."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class KindChoice(CallbackData, prefix="kind"):
    kind: str


class EvidenceStep(CallbackData, prefix="ev"):
    action: str  # "skip" | "done"


class SummaryChoice(CallbackData, prefix="sum"):
    action: str  # "confirm" | "edit" | "cancel"


class NewCode(CallbackData, prefix="code"):
    reference: str


class CancelPick(CallbackData, prefix="cx"):
    reference: str
    confirm: bool = False
    keep: bool = False


class LanguageChoice(CallbackData, prefix="lang"):
    code: str


class StaffAction(CallbackData, prefix="st"):
    action: str  # take | approve | reject | ask | complete | evidence
    reference: str
