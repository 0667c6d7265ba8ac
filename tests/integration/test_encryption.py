"""Personal data is encrypted at rest: the database never holds it in clear."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import STAFF_ID
from tests.stored import everything_stored
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

PHONE_DIGITS = "7011234567"
EMAIL = "aigerim.secret@mail.kz"
NAME = "Айгерим Секретова"
IIN_LIKE = "900101300125"


async def test_no_phone_email_name_or_words_in_clear(
    service: RequestService, engine: AsyncEngine, database_url: str
) -> None:
    view = await service.open_request(
        kind="withdraw_consent",
        channel="telegram",
        language="ru",
        telegram_user_id=31337,
        fields={"full_name": NAME, "data_concerned": f"ИИН {IIN_LIKE}", "email": EMAIL},
        body=f"Я, {NAME}, отзываю согласие. Мой телефон +7 {PHONE_DIGITS}",
        evidence=[Evidence("passport-scan.pdf", "application/pdf", f"{NAME} {IIN_LIKE}".encode())],
    )
    await service.send_email_code(view.reference, Actor.person_telegram(31337), EMAIL)
    await service.verify_by_contact(
        view.reference, sender_user_id=31337, contact_user_id=31337, phone="+7" + PHONE_DIGITS
    )
    await service.reject(view.reference, Actor.staff(STAFF_ID, "Dana"), f"Dear {NAME}, no.")

    stored = await everything_stored(engine, database_url)

    assert view.reference.encode() in stored  # the dump does see the rows
    for secret in (PHONE_DIGITS, EMAIL, NAME, IIN_LIKE, "passport-scan"):
        assert secret.encode() not in stored, secret
    # And the service still reads them back.
    assert (await service.get(view.reference)).fields["full_name"] == NAME
