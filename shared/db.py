"""Async SQLAlchemy engines for SQLite (the embedded local default) and PostgreSQL (production).

SQLite runs in WAL mode and every write transaction begins IMMEDIATE, so a read-then-write
transaction (the marks upsert) holds the write lock from its first statement and two writers never
interleave; a ``reader``'s transactions begin DEFERRED (a snapshot, no lock). PostgreSQL serialises
writers per school with a transaction-scoped advisory lock (``lock_school``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class EncodedJSON(bytes):
    """A JSON value already encoded (``orjson.dumps``): a JSON column stores it as it is, so a
    value also sent elsewhere (a signal's data, in its event too) is encoded once."""


def _json(value: Any) -> str:
    if isinstance(value, EncodedJSON):
        return value.decode()
    return orjson.dumps(value).decode()


_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def on_loopback_without_tls_choice(url: str) -> bool:
    """A PostgreSQL URL naming this machine's loopback address, with no ``ssl``/``sslmode`` of its own.

    Such a connection is made without TLS: asyncpg's default (``prefer``) encrypts whenever the
    server offers it, as Debian's does, and on loopback the bytes never leave the kernel, so
    encrypting them protects nothing and cost ingest 3–4 % of its CPU (py-spy: asyncio's
    ``SSLObject`` reading and writing every COPY), and the server as much again. Any other host
    keeps asyncpg's default; a URL can always choose (``?ssl=require``, ``?ssl=verify-full``).
    """
    parsed = make_url(url)
    return (
        parsed.get_backend_name() == "postgresql"
        and parsed.host in _LOOPBACK
        and not {"ssl", "sslmode"} & set(parsed.query)
    )


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and IMMEDIATE transactions (DEFERRED
    on a ``reader``).

    JSON columns are written with orjson (dates and datetimes as ISO strings).
    """
    kwargs.setdefault("json_serializer", _json)
    kwargs.setdefault("json_deserializer", orjson.loads)
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Hand transaction control to SQLAlchemy so BEGIN IMMEDIATE below is the only BEGIN.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A reader's transaction (``reader``) is DEFERRED: a snapshot, no write lock.
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
            # What ``untouched_sqlite_file`` compares with: rows changed by this connection so far.
            conn.info[_CHANGES_AT_BEGIN] = None if read_only else _sqlite_changes(conn)

        @event.listens_for(engine.sync_engine, "commit")
        @event.listens_for(engine.sync_engine, "rollback")
        def _on_end(conn: Connection) -> None:
            conn.info.pop(_CHANGES_AT_BEGIN, None)  # the next transaction has not begun yet

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    if on_loopback_without_tls_choice(url):
        kwargs["connect_args"] = {"ssl": False, **kwargs.get("connect_args", {})}
    engine = create_async_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        event.listen(engine.sync_engine, "checkout", _replace_closed)
    return engine


def _replace_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """At checkout, a pooled PostgreSQL connection that the server has closed is replaced (the pool
    opens a new one), with no round trip. asyncpg reads its socket all the time, so it sees the
    server close it as it happens — a restart, ``pg_terminate_backend``, an idle timeout — and
    reports it through ``is_closed()``. This replaces SQLAlchemy's ``pool_pre_ping``, which made
    every checkout three round trips (BEGIN, an empty query, ROLLBACK: ~8 % of a rules GET's CPU
    on PostgreSQL, two checkouts per GET). A connection whose network path dies silently is found
    by its first query instead, as a pre-ping without a timeout would not find it either."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


READ_ONLY = "rollcall_read_only"


def reader(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for transactions that only read (same pool). On SQLite they BEGIN DEFERRED, so a
    read takes a snapshot and never the write lock: every transaction beginning IMMEDIATE made each
    read wait for (and block) the writers, the consumers' batches and the first-day fast path. On
    PostgreSQL they are READ ONLY transactions, so a write on a reader fails at once, in tests too.
    """
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name != "sqlite":
        options["postgresql_readonly"] = True
    return engine.execution_options(**options)


_CHANGES_AT_BEGIN = "rollcall_changes_at_begin"


def _sqlite_changes(conn: Connection) -> int:
    """Rows inserted, updated or deleted through this SQLite connection since it opened."""
    changes = conn.connection.driver_connection.total_changes  # type: ignore[union-attr]
    assert isinstance(changes, int)
    return changes


def _absolute(path: str) -> str:
    return str(Path(path).absolute())  # no I/O: the working directory joined with a relative path


async def untouched_sqlite_file(conn: AsyncConnection) -> str | None:
    """The database file of ``conn`` if it is a SQLite write transaction that has changed nothing
    yet; otherwise None (PostgreSQL, an in-memory database, a ``reader``, a transaction that wrote).

    Such a transaction holds the database's write lock from its BEGIN IMMEDIATE to its end, so no
    other transaction commits meanwhile: until it writes, any other connection to the file (in
    another process too) reads exactly what it would read itself. A whole-borough recompute has its
    pool's worker processes read the registers this way (``recompute.recompute``). After a write
    the transaction sees its own uncommitted rows and nobody else does, so this answers None.
    """
    if conn.dialect.name != "sqlite":
        return None
    url = conn.engine.url
    if not url.database or url.database == ":memory:" or url.query.get("mode") == "memory":
        return None
    raw = await conn.get_raw_connection()
    at_begin = raw.info.get(_CHANGES_AT_BEGIN)
    if at_begin is None or raw.driver_connection.total_changes != at_begin:  # type: ignore[union-attr]
        return None
    return _absolute(url.database)


async def ping(engine: AsyncEngine) -> None:
    """Raises if the database cannot answer a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def asyncpg_connection(conn: AsyncConnection) -> Any | None:
    """The asyncpg connection under ``conn``, inside ``conn``'s transaction; ``None`` off PostgreSQL.

    The bulk paths (COPY, ``= ANY($1)`` look-ups, prepared ``executemany``) use it directly: they
    skip SQLAlchemy's per-row parameter processing, which dominated the marks path's profile.
    SQLAlchemy begins the driver's transaction lazily, at its first statement: if none ran yet, it
    is begun here, so that everything done here commits (or rolls back) with it — by the adapter's
    own ``_start_transaction`` (what SQLAlchemy awaits before a statement: just the BEGIN), or,
    should a SQLAlchemy release not have it, by one trivial statement.
    """
    if conn.dialect.name != "postgresql":
        return None
    raw = await conn.get_raw_connection()
    adapted = raw.dbapi_connection
    if getattr(adapted, "_transaction", True) is None:
        start = getattr(adapted, "_start_transaction", None)
        if start is not None:
            await start()
        else:
            await conn.execute(text("SELECT 1"))
    return raw.driver_connection


@contextlib.asynccontextmanager
async def autocommit_driver(engine: AsyncEngine) -> AsyncIterator[Any | None]:
    """A pooled connection's asyncpg connection for statements that each stand alone (committed
    as they run, no BEGIN and COMMIT round trips around them); ``None`` off PostgreSQL.

    For the outbox relay's read of pending rows and its delete of published ones: one statement
    each, which needs no transaction around it (the relay's every cycle was a dozen round trips).
    """
    if engine.dialect.name != "postgresql":
        yield None
        return
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        yield raw.driver_connection


def lock_key(name: str) -> int:
    """A stable 64-bit key for a PostgreSQL advisory lock named ``name``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


async def lock_school(conn: AsyncConnection, urn: str) -> None:
    """Serialise writers of one school's data until the transaction ends (no-op on SQLite).

    An MIS sends a school's batches one after another; two overlapping batches for the same
    school would otherwise both read a mark's old code and both report it as ``amended`` from it.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(f"school:{urn}")})


async def lock_schools(conn: AsyncConnection, urns: list[str]) -> None:
    """``lock_school`` for several schools in one statement, in one fixed (key) order, so two
    transactions locking overlapping sets can never wait on each other in a cycle."""
    await _lock_keys(conn, {lock_key(f"school:{urn}") for urn in urns})


PUPIL_LOCK_BUCKETS = 256


async def lock_pupils(conn: AsyncConnection, upns: Iterable[str]) -> None:
    """Serialise work on the same pupils across processes until the transaction ends (no-op on
    SQLite). UPNs are hashed into ``PUPIL_LOCK_BUCKETS`` locks, so a batch of thousands of pupils
    takes at most 256 (PostgreSQL's shared lock table holds ~6,400 by default): two transactions
    on different pupils of one bucket wait for each other, which is rare and only slower."""
    await _lock_keys(conn, {lock_key(f"pupils:{lock_key(upn) % PUPIL_LOCK_BUCKETS}") for upn in upns})


async def _lock_keys(conn: AsyncConnection, keys: set[int]) -> None:
    """Take the advisory locks ``keys`` in ascending order, in one statement (through asyncpg:
    SQLAlchemy's text statement cost more CPU than the lock itself on the one-mark path)."""
    driver = await asyncpg_connection(conn) if keys else None
    if driver is None:
        return
    await driver.fetchval(
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k", sorted(keys)
    )


async def try_lock(conn: AsyncConnection, name: str) -> bool:
    """Take the lock ``name`` until the transaction ends if nobody holds it; False if another
    transaction does (SQLite, one process: always True). For periodic work that one instance of a
    service should do at a time (schedulers): the others skip their turn."""
    if conn.dialect.name != "postgresql":
        return True
    got = await conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)})
    return bool(got.scalar())


async def upsert(
    conn: AsyncConnection, table: Any, rows: list[dict[str, Any]], keys: list[str], add: tuple[str, ...] = ()
) -> None:
    """Insert ``rows`` or, where the key exists, overwrite the other columns (SQLite and PostgreSQL);
    columns named in ``add`` are added to the stored values instead (counters kept by deltas)."""
    if not rows:
        return
    if add:
        rows = sorted(rows, key=lambda r: tuple(r[k] for k in keys))  # one lock order: no deadlocks
    await insert_rows(conn, upsert_statement(conn.dialect.name, table, keys, tuple(rows[0]), add), rows)


def upsert_statement(
    dialect: str, table: Any, keys: Sequence[str], row_keys: Sequence[str], add: tuple[str, ...] = ()
) -> Insert:
    """``upsert``'s statement for rows with ``row_keys`` (the same object for the same arguments)."""
    columns = tuple(c for c in row_keys if c not in keys)
    return _upsert_statement(dialect, table, tuple(keys), columns, add)


@lru_cache(maxsize=128)
def _upsert_statement(
    dialect: str, table: Any, keys: tuple[str, ...], columns: tuple[str, ...], add: tuple[str, ...]
) -> Insert:
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
    if not columns:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: (table.c[c] + stmt.excluded[c]) if c in add else stmt.excluded[c] for c in columns},
    )


@lru_cache(maxsize=64)
def plain_insert(table: Any) -> Insert:
    """``table.insert()``, one statement object per table, so ``insert_rows`` compiles it once."""
    stmt: Insert = table.insert()
    return stmt


async def insert_rows(conn: AsyncConnection, stmt: Insert, rows: Sequence[Mapping[str, Any]]) -> None:
    """Execute ``stmt`` (an INSERT, or an upsert built on one) once per row, as one driver
    ``executemany``; every row a dict with the same keys, the columns to insert.

    SQLAlchemy's own ``executemany`` builds and processes a parameter dict per row, which was the
    largest part of the rules consumer's database time (py-spy, issue 8). Here the statement is
    compiled once for the dialect (and remembered, for a statement object that is reused:
    ``plain_insert``, ``upsert``), and each row becomes a tuple in the compiled statement's
    positional order, passed through each column type's own bind processor (a date becomes the
    string SQLAlchemy stores on SQLite, a JSON value its text), so the rows stored are exactly
    those ``conn.execute(stmt, rows)`` would store (a test compares both on SQLite and PostgreSQL).
    """
    if not rows:
        return
    if _compiled(stmt, conn.dialect, tuple(rows[0]))[0] is None:  # a bound value of its own
        await conn.execute(stmt, list(rows))
        return
    await execute_bound(conn, stmt, bind_rows(stmt, conn.dialect, rows))


@dataclass(frozen=True, slots=True)
class BoundRows:
    """Rows for one INSERT made into its driver parameters (``bind_rows``, ``bind_tuples``): each a
    tuple in the compiled statement's positional order, every value through its column type's bind
    processor. Plain data, so a worker process can bind rows that the service's process then only
    executes (``execute_bound``): a recompute's pool does, since binding ~70,000 rows of signals
    and outbox events was a fifth of the service's process's time in a borough's first pass."""

    keys: tuple[str, ...]  # the columns the rows give
    names: tuple[str, ...]  # the compiled statement's positional parameters
    params: list[tuple[Any, ...]]


NO_ROWS = BoundRows((), (), [])


def bind_rows(stmt: Insert, dialect: Dialect, rows: Sequence[Mapping[str, Any]]) -> BoundRows:
    """``rows`` (dicts with the same keys) bound for ``stmt`` on ``dialect``: the engine's own, or
    ``offline_dialect`` in a process without one."""
    if not rows:
        return NO_ROWS
    keys = tuple(rows[0])
    _, names, processors = _bindable(stmt, dialect, keys)
    pairs = list(zip(names, processors, strict=True))
    params = [tuple(row[n] if p is None else p(row[n]) for n, p in pairs) for row in rows]
    return BoundRows(keys, names, params)


def bind_tuples(
    stmt: Insert, dialect: Dialect, keys: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> BoundRows:
    """``bind_rows`` for rows given as tuples of the columns ``keys``, in that order."""
    if not rows:
        return NO_ROWS
    _, names, processors = _bindable(stmt, dialect, keys)
    pairs = [(keys.index(n), p) for n, p in zip(names, processors, strict=True)]
    params = [tuple(row[i] if p is None else p(row[i]) for i, p in pairs) for row in rows]
    return BoundRows(keys, names, params)


async def execute_bound(conn: AsyncConnection, stmt: Insert, bound: BoundRows) -> None:
    """Execute ``stmt`` for rows bound by ``bind_rows`` (here or in another process), as one driver
    ``executemany``. Refuses rows bound for another parameter order (a statement of another shape)."""
    if not bound.params:
        return
    sql, names, _ = _bindable(stmt, conn.dialect, bound.keys)
    if names != bound.names:
        raise ValueError(f"rows bound as {bound.names}, but the statement takes {names}")
    await conn.exec_driver_sql(sql, bound.params)


_DRIVER_URLS = {"sqlite": "sqlite+aiosqlite://", "postgresql": "postgresql+asyncpg://"}


@cache
def offline_dialect(name: str) -> Dialect:
    """The dialect ``create_engine`` gives an engine of database ``name`` (``sqlite``,
    ``postgresql``), made without an engine or a connection: a pool worker binds rows with it
    (``bind_rows``) as the engine's own dialect would (a test compares the two)."""
    dialect_class: Any = make_url(_DRIVER_URLS[name]).get_dialect()  # a concrete dialect class
    dialect: Dialect = dialect_class(
        dbapi=dialect_class.import_dbapi(), json_serializer=_json, json_deserializer=orjson.loads
    )
    return dialect


def _bindable(
    stmt: Insert, dialect: Dialect, keys: tuple[str, ...]
) -> tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]:
    sql, names, processors = _compiled(stmt, dialect, keys)
    if sql is None:
        raise ValueError("the statement binds a value of its own: use insert_rows")
    return sql, names, processors


@lru_cache(maxsize=256)
def _compiled(
    stmt: Insert, dialect: Any, keys: tuple[str, ...]
) -> tuple[str | None, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]:
    """``stmt`` compiled for ``dialect`` and rows with ``keys``: its SQL (None when it binds a value
    of its own), the positional parameter names and each one's bind processor."""
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or [])
    if set(names) - set(keys):
        return None, (), ()
    processors = tuple(compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
    return str(compiled), names, processors


Gate = Callable[[], contextlib.AbstractAsyncContextManager[None]]


class WriteGate:
    """Which of a process's consumers writes next, where the database has a single writer.

    SQLite lets one transaction write at a time and its busy handler is not fair: a consumer that
    commits and at once begins its next transaction keeps the lock, while another waits in
    ``busy_timeout`` sleeps and wakes to find it taken again (the first-day fast path waited
    seconds behind the rules consumer's backlog that way). In one process the gate decides
    instead: a ``bulk`` writer enters only when no ``urgent`` one is waiting, and an urgent one
    goes next, as soon as the bulk writer's current transaction ends. Kept only for SQLite:
    PostgreSQL's writers lock what they touch (``lock_pupils``) and pass each other.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._urgent = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @contextlib.asynccontextmanager
    async def bulk(self) -> AsyncIterator[None]:
        while True:
            await self._clear.wait()
            await self._lock.acquire()
            if not self._urgent:
                break
            self._lock.release()  # an urgent writer asked meanwhile: it goes first
        try:
            yield
        finally:
            self._lock.release()

    def waiting(self) -> bool:
        """Whether an urgent writer waits (a bulk writer commits at its next chance)."""
        return self._urgent > 0

    @contextlib.asynccontextmanager
    async def urgent(self) -> AsyncIterator[None]:
        self._urgent += 1
        self._clear.clear()
        try:
            async with self._lock:
                yield
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._clear.set()
