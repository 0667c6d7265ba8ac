"""Key rotation: the stored data moved to a new key, and proof of which keys it still needs.

A rotation while the desk runs (``aina-dsr keys`` drives it):

1. A new key is made (``aina-dsr keys generate``).
2. ``DSR_ENCRYPTION_KEY=NEW,OLD`` for every process, restarted one by one: each
   then writes under NEW and reads both.
3. :func:`rotate_keys` re-encrypts every ``*_enc`` column under NEW, a
   small batch per short transaction: rows are read, re-encrypted outside any
   transaction, and written back only where they still hold what was read (a
   row the desk changed meanwhile is already under NEW, or taken by a rerun).
4. :func:`check_keys` reads every stored value with NEW alone; nothing left
   under OLD means OLD can go: ``DSR_ENCRYPTION_KEY=NEW``, restart one by one.

Blind indexes (``*_index``) and one-time code hashes are keyed with subkeys of
the *first* key (:class:`workflows.privacy.vault.Vault`), so they change at step 2.
Step 3 recomputes every index from its decrypted value, the lookup tables
first (people, customers, verifications), so lookups by phone, e-mail or IIN
miss only for the moment between the restart and that first pass. Keyed
hashes with no stored value to recompute them from are left as they are: a
one-time code sent before step 2 no longer matches (the person asks for a new
one), the next customer import rewrites each row once (its row digest
changed), and ``inbound_mail.sender_index`` of older mail matches no new mail.

The audit log's signatures (:mod:`workflows.privacy.audit`) are keyed with a subkey of
the first key too: events record which key signed them, so the log verifies
under ``NEW,OLD`` throughout; step 3 signs every event signed with OLD again
with NEW (after checking it), and step 4 counts those still signed with OLD.

Every process also checks at start-up that the newest stored values read with
its keys (:func:`unreadable_value`), before it writes anything under a wrong one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Column, Integer, Table, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from workflows.persistence.tables import Base
from workflows.privacy.audit import Resigned, resign_chain
from workflows.privacy.vault import Vault, VaultError

DEFAULT_BATCH = 100
# Rows with files in them: fewer per batch, so a batch stays small in memory and short to write.
LARGE_TABLES = {"attachment": 10, "inbound_mail": 10}
# The lookup tables first: their indexes change with the first key.
FIRST = ("data_subject", "customer", "verification")


@dataclass(frozen=True)
class IndexSpec:
    """An ``*_index`` column: the blind index of the value in ``value`` (an ``*_enc`` column)."""

    index: str
    value: str
    kind: Callable[[Any], str]


def _fixed(kind: str) -> Callable[[Any], str]:
    return lambda row: kind


def _verification_kind(row: Any) -> str:
    # A Telegram contact or an SMS code proves a phone; an e-mail code proves an e-mail.
    return "email" if row.method == "email_code" else "phone"


INDEXES: dict[str, tuple[IndexSpec, ...]] = {
    "data_subject": (
        IndexSpec("phone_index", "phone_enc", _fixed("phone")),
        IndexSpec("email_index", "email_enc", _fixed("email")),
    ),
    "customer": (
        IndexSpec("phone_index", "phone_enc", _fixed("phone")),
        IndexSpec("email_index", "email_enc", _fixed("email")),
        IndexSpec("iin_index", "iin_enc", _fixed("iin")),
    ),
    "verification": (IndexSpec("target_index", "target_enc", _verification_kind),),
}
EXTRA_COLUMNS = {"verification": ("method",)}


@dataclass
class TableCount:
    """What one table held and what was done to it (or found in it)."""

    rows: int = 0
    tokens: int = 0
    reencrypted: int = 0
    indexes: int = 0
    old_key: int = 0
    unreadable: int = 0
    stale_indexes: int = 0
    unmatched_indexes: int = 0
    changed_meanwhile: int = 0
    resigned: int = 0
    # Audit events that hold under no configured key: not a key's matter (see _audit_count).
    broken: int = 0
    columns: dict[str, int] = field(default_factory=dict)


def encrypted_tables() -> list[Table]:
    """Every table with an ``*_enc`` column, the lookup tables first."""
    tables = [
        table
        for table in Base.metadata.sorted_tables
        if any(column.name.endswith("_enc") for column in table.columns)
    ]
    return sorted(tables, key=lambda t: FIRST.index(t.name) if t.name in FIRST else len(FIRST))


class Keys:
    """The configured keys: the current one first, then the older ones."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.current = Fernet(keys[0].encode())
        self.all = MultiFernet([Fernet(key.encode()) for key in keys])
        self.older = [Fernet(key.encode()) for key in keys[1:]]
        self.vault = Vault(*keys)
        # One vault per key: the index each key gives (the first one's is the current).
        self.index_vaults = [Vault(key) for key in keys]

    def is_current(self, token: bytes) -> bool:
        try:
            self.current.decrypt(token)
        except InvalidToken:
            return False
        return True

    def readable_by_older(self, token: bytes) -> bool:
        for older in self.older:
            try:
                older.decrypt(token)
            except InvalidToken:
                continue
            return True
        return False

    def plain(self, token: bytes | None) -> str | None:
        if token is None:
            return None
        try:
            return self.all.decrypt(token).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError):
            return None


def _columns(table: Table) -> tuple[Column[Any], list[Column[Any]], tuple[IndexSpec, ...]]:
    [pk] = list(table.primary_key.columns)
    encrypted = [c for c in table.columns if c.name.endswith("_enc")]
    return pk, encrypted, INDEXES.get(table.name, ())


async def _batches(engine: AsyncEngine, table: Table, batch: int) -> AsyncIterator[Any]:
    pk, encrypted, indexes = _columns(table)
    wanted = [pk, *encrypted]
    wanted += [table.c[spec.index] for spec in indexes]
    wanted += [table.c[name] for name in EXTRA_COLUMNS.get(table.name, ())]
    last: Any = None
    while True:
        query = select(*wanted).order_by(pk).limit(batch)
        if last is not None:
            query = query.where(pk > last)
        async with engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        if not rows:
            return
        last = getattr(rows[-1], pk.name)
        yield rows


async def rotate_table(
    engine: AsyncEngine,
    keys: Keys,
    table: Table,
    batch: int,
    progress: Callable[[str], None],
) -> TableCount:
    """Re-encrypt one table under the current key and recompute its indexes, batch by batch."""
    pk, encrypted, indexes = _columns(table)
    count = TableCount()
    async with engine.connect() as connection:
        total = int(await connection.scalar(select(func.count()).select_from(table)) or 0)
    async for rows in _batches(engine, table, batch):
        changes: list[tuple[Any, dict[str, Any], list[Any]]] = []
        for row in rows:
            count.rows += 1
            values: dict[str, Any] = {}
            for column in encrypted:
                token = getattr(row, column.name)
                if token is None:
                    continue
                count.tokens += 1
                token = bytes(token)
                if keys.is_current(token):
                    continue
                try:
                    values[column.name] = keys.all.rotate(token)
                except InvalidToken:
                    count.unreadable += 1
            for spec in indexes:
                stored = getattr(row, spec.index)
                plain = keys.plain(getattr(row, spec.value))
                if stored is None or plain is None:
                    continue
                kind = spec.kind(row)
                made_by = [v.blind_index(kind, plain) for v in keys.index_vaults]
                if stored == made_by[0]:
                    continue
                if stored in made_by[1:]:
                    values[spec.index] = made_by[0]
                else:
                    # Not this value's index under any key we hold: not ours to guess.
                    count.unmatched_indexes += 1
            if values:
                # Written only where the row still holds what was read.
                guards = [
                    table.c[c.name].is_(None)
                    if getattr(row, c.name) is None
                    else table.c[c.name] == getattr(row, c.name)
                    for c in encrypted
                ]
                changes.append((getattr(row, pk.name), values, guards))
        if changes:
            async with engine.begin() as connection:
                for key, values, guards in changes:
                    result = await connection.execute(
                        update(table).where(and_(pk == key, *guards)).values(**values)
                    )
                    if result.rowcount:
                        count.reencrypted += sum(1 for n in values if n.endswith("_enc"))
                        count.indexes += sum(1 for n in values if n.endswith("_index"))
                    else:
                        count.changed_meanwhile += 1
        progress(f"{table.name}: {count.rows}/{max(total, count.rows)} row(s)")
    return count


async def check_table(engine: AsyncEngine, keys: Keys, table: Table, batch: int) -> TableCount:
    """Count what in one table still needs a key other than the current one."""
    _, encrypted, indexes = _columns(table)
    count = TableCount()
    async for rows in _batches(engine, table, batch):
        for row in rows:
            count.rows += 1
            for column in encrypted:
                token = getattr(row, column.name)
                if token is None:
                    continue
                count.tokens += 1
                token = bytes(token)
                if keys.is_current(token):
                    continue
                where = f"{table.name}.{column.name}"
                count.columns[where] = count.columns.get(where, 0) + 1
                if keys.readable_by_older(token):
                    count.old_key += 1
                else:
                    count.unreadable += 1
            for spec in indexes:
                stored = getattr(row, spec.index)
                plain = keys.plain(getattr(row, spec.value))
                if stored is None or plain is None:
                    continue
                if stored != keys.index_vaults[0].blind_index(spec.kind(row), plain):
                    where = f"{table.name}.{spec.index}"
                    count.columns[where] = count.columns.get(where, 0) + 1
                    count.stale_indexes += 1
    return count


AUDIT = "audit_event"


def _audit_count(found: Resigned, *, checking: bool) -> TableCount:
    """The audit log's signatures, counted as a table's values are: one per event."""
    count = TableCount(
        rows=found.events,
        tokens=found.events,
        old_key=found.older if checking else 0,
        # Signed with a key not configured: the old key is still needed to verify them.
        unreadable=found.foreign,
        changed_meanwhile=found.changed_meanwhile,
        resigned=found.resigned,
        # Not a key's matter: such an event fails with every key, and the old one changes nothing.
        broken=found.broken,
    )
    if checking and (found.older or found.foreign):
        count.columns[f"{AUDIT}.mac"] = found.older + found.foreign
    return count


async def rotate_keys(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    keys: tuple[str, ...],
    *,
    batch: int | None = None,
    progress: Callable[[str], None],
) -> dict[str, TableCount]:
    """Step 3: every table re-encrypted under the first of ``keys``, then the audit log re-signed.

    ``vault`` holds the same ``keys`` (the sessions sign with it); ``batch``
    overrides the rows per transaction; ``progress`` gets a line per batch.
    The counts are by table name, the audit log's last, under :data:`AUDIT`.
    """
    found = Keys(keys)
    results: dict[str, TableCount] = {}
    for table in encrypted_tables():
        size = batch or LARGE_TABLES.get(table.name, DEFAULT_BATCH)
        results[table.name] = await rotate_table(engine, found, table, size, progress)
    # The audit log: each event signed with an older key is signed again with the first.
    resigned = await resign_chain(sessions, vault, batch=batch or 500)
    results[AUDIT] = _audit_count(resigned, checking=False)
    return results


async def check_keys(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    keys: tuple[str, ...],
    *,
    batch: int | None = None,
) -> dict[str, TableCount]:
    """Step 4: what in each table (and the audit log) needs a key other than the first."""
    found = Keys(keys)
    results: dict[str, TableCount] = {}
    for table in encrypted_tables():
        size = batch or LARGE_TABLES.get(table.name, DEFAULT_BATCH)
        results[table.name] = await check_table(engine, found, table, size)
    signatures = await resign_chain(sessions, vault, write=False, batch=batch or 500)
    results[AUDIT] = _audit_count(signatures, checking=True)
    return results


# -- at start-up ---------------------------------------------------------------

# Whole files and raw letters: reading one at start-up would cost more than it proves.
BULKY = frozenset({"attachment.data_enc", "inbound_mail.raw_enc"})


def _checked_tables() -> list[tuple[Table, list[str]]]:
    """Tables with encrypted columns and a growing integer id: their newest row is checked."""
    found = []
    for table in Base.metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer):
            continue
        columns = [
            column.name
            for column in table.columns
            if column.name.endswith("_enc") and f"{table.name}.{column.name}" not in BULKY
        ]
        if columns:
            found.append((table, columns))
    return found


async def unreadable_value(engine: AsyncEngine, vault: Vault) -> str | None:
    """``table.column`` of a newest stored value no configured key reads, else ``None``."""
    async with engine.connect() as connection:
        for table, columns in _checked_tables():
            [key] = table.primary_key.columns
            query = select(*(table.c[name] for name in columns)).order_by(key.desc()).limit(1)
            row = (await connection.execute(query)).first()
            if row is None:
                continue
            for name, token in zip(columns, row, strict=True):
                if token is None:
                    continue
                try:
                    vault.decrypt_bytes(token)
                except VaultError:
                    return f"{table.name}.{name}"
    return None
