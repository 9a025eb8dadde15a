"""Transactional outbox and its relay (ARCHITECTURE principle 3: durable first, then tell).

A service writes its state and the events describing it in one transaction (``outbox_records``
+ ``enqueue``); ``OutboxRelay`` publishes pending rows to Kafka in ``seq`` order with the
idempotent producer and deletes them once Kafka has acknowledged every one (``acks=all``).
A process killed between commit and publish loses nothing: the rows are still there and the next
relay publishes them. A crash after send but before delete republishes a few events; consumers
de-duplicate by event id (the inbox).

Rows are published in ``seq`` order, which keeps the per-pupil order that consumers rely on. So
one relay publishes per database at a time, however many processes of a service run on it: on
PostgreSQL each process's relay tries to take a session advisory lock named after the outbox
table (``pg_try_advisory_lock``, on a connection the leader keeps, idle outside a transaction);
the holder publishes, the others try again every ``poll_seconds`` and take over within about a
second when the leader's process or connection dies (the lock goes with its session). A leader
that lost its connection without noticing could overlap a new one for a moment: a few events
published twice, which consumers de-duplicate. SQLite is one process: always the leader.

Throughput (issue 8): a row is a bundle of one transaction's events for a topic (``outbox_table``),
written with one COPY on PostgreSQL; the relay reads with the driver directly, caches each key's
partition, sends whole record batches per partition, and keeps up to ``depth`` batches in flight —
reading and sending the next while Kafka acknowledges the previous and its rows are deleted in one
statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import (
    Gate,
    asyncpg_connection,
    autocommit_driver,
    bind_tuples,
    execute_bound,
    lock_key,
    plain_insert,
)
from shared.events import new_traceparent
from shared.observability import error_fields

log = structlog.get_logger()

PUBLISHED = Counter("rollcall_outbox_published_total", "Events published from the outbox", ["topic"])


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table, declared in each service's own metadata and migrations.

    A row is a *bundle*: the events one transaction wrote for one topic (up to ``BUNDLE`` of them),
    not one event. ``meta`` is the JSON array of each event's ``[id, key, type]`` and ``value``
    their CloudEvent JSON joined by line feeds (JSON as orjson writes it never holds a raw line
    feed: every one inside a string is escaped), in order; ``events`` is how many. Issue 8: a
    10,000-mark batch wrote 10,000 rows, each inserted, indexed, read back, deleted and vacuumed —
    over a third of PostgreSQL's CPU per mark. As one row (its two large values compressed with lz4 where
    the server has it, migration ``bundle_outbox``) that is ~0.15 instead of ~0.65 CPU s per 100,000
    events, and ingest's own share of writing and reading them halves.
    """
    return Table(
        "outbox",
        metadata,
        # BIGINT on PostgreSQL; INTEGER PRIMARY KEY (the rowid, autoincrementing) on SQLite.
        Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("topic", String(100), nullable=False),
        Column("traceparent", String(64), nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("events", Integer, nullable=False),
        Column("meta", LargeBinary, nullable=False),
        sqlite_autoincrement=True,  # a seq is never reused (``OutboxRelay._pump`` relies on it)
    )


def sqlite_outbox_autoincrement(execute: Callable[[str], Any], dialect: str, on: bool) -> None:
    """The outbox rebuilt with (or without) ``AUTOINCREMENT`` on SQLite, for the services'
    migrations (keep it as it is: migrations are frozen; it runs on the one-event-a-row outbox
    that came before ``bundle_outbox``). Without it a seq is the largest remaining plus one, so
    once the relay has deleted the newest rows a new row can get a seq below the relay's cursor.
    PostgreSQL's sequence never goes back: nothing to do."""
    if dialect != "sqlite":
        return
    columns = "seq, event_id, topic, key, event_type, traceparent, value"
    execute(
        f"CREATE TABLE outbox_new (seq INTEGER PRIMARY KEY{' AUTOINCREMENT' if on else ''}, "
        "event_id VARCHAR(64) NOT NULL, topic VARCHAR(100) NOT NULL, key VARCHAR(100) NOT NULL, "
        "event_type VARCHAR(100) NOT NULL, traceparent VARCHAR(64) NOT NULL, value BLOB NOT NULL)"
    )
    execute(f"INSERT INTO outbox_new ({columns}) SELECT {columns} FROM outbox ORDER BY seq")  # noqa: S608 - constants
    execute("DROP TABLE outbox")
    execute("ALTER TABLE outbox_new RENAME TO outbox")


def bundle_outbox(bind: Connection, upgrade: bool) -> None:
    """Each service's migration to (``upgrade``) or from the outbox of bundles (``outbox_table``).

    Up: every pending row becomes a bundle of its one event, in place and in ``seq`` order, so
    nothing committed before the upgrade is lost or reordered; on PostgreSQL ``meta`` and ``value``
    are compressed with lz4 when the server was built with it (else its default, pglz). Down: every
    bundle is split back into one row per event, in order (new seqs, above every old one).
    """
    execute = bind.exec_driver_sql
    if bind.dialect.name == "postgresql":
        if upgrade:
            execute("ALTER TABLE outbox ADD COLUMN events INTEGER NOT NULL DEFAULT 1, ADD COLUMN meta BYTEA")
            execute(
                "UPDATE outbox SET meta = convert_to("
                "json_build_array(json_build_array(event_id, key, event_type))::text, 'UTF8')"
            )
            execute(
                "ALTER TABLE outbox ALTER COLUMN events DROP DEFAULT, ALTER COLUMN meta SET NOT NULL, "
                "DROP COLUMN event_id, DROP COLUMN key, DROP COLUMN event_type"
            )
            lz4 = execute(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
            ).scalar()
            if lz4:
                execute(
                    "ALTER TABLE outbox ALTER COLUMN meta SET COMPRESSION lz4, "
                    "ALTER COLUMN value SET COMPRESSION lz4"
                )
            return
        bundles = execute("SELECT seq, topic, traceparent, meta, value FROM outbox ORDER BY seq").all()
        execute(
            "ALTER TABLE outbox ADD COLUMN event_id VARCHAR(64), ADD COLUMN key VARCHAR(100), "
            "ADD COLUMN event_type VARCHAR(100), ALTER COLUMN events DROP NOT NULL, "
            "ALTER COLUMN meta DROP NOT NULL"
        )
        _unbundle(bind, bundles)
        execute(f"DELETE FROM outbox WHERE seq <= {max((b[0] for b in bundles), default=0)}")  # noqa: S608 - a number
        execute(
            "ALTER TABLE outbox DROP COLUMN events, DROP COLUMN meta, ALTER COLUMN event_id SET NOT NULL, "
            "ALTER COLUMN key SET NOT NULL, ALTER COLUMN event_type SET NOT NULL"
        )
        return
    # SQLite cannot add NOT NULL columns without a default, nor drop columns in use: rebuild.
    if upgrade:
        execute(
            "CREATE TABLE outbox_new (seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "
            "topic VARCHAR(100) NOT NULL, traceparent VARCHAR(64) NOT NULL, value BLOB NOT NULL, "
            "events INTEGER NOT NULL, meta BLOB NOT NULL)"
        )
        execute(
            "INSERT INTO outbox_new (seq, topic, traceparent, value, events, meta) "
            "SELECT seq, topic, traceparent, value, 1, "
            "CAST(json_array(json_array(event_id, key, event_type)) AS BLOB) FROM outbox ORDER BY seq"
        )
        execute("DROP TABLE outbox")
        execute("ALTER TABLE outbox_new RENAME TO outbox")
        return
    bundles = execute("SELECT seq, topic, traceparent, meta, value FROM outbox ORDER BY seq").all()
    execute("DROP TABLE outbox")
    execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id VARCHAR(64) NOT NULL, "
        "topic VARCHAR(100) NOT NULL, key VARCHAR(100) NOT NULL, event_type VARCHAR(100) NOT NULL, "
        "traceparent VARCHAR(64) NOT NULL, value BLOB NOT NULL)"
    )
    _unbundle(bind, bundles)


def _unbundle(bind: Connection, bundles: Sequence[Any]) -> None:
    rows = [
        {"event_id": event_id, "topic": topic, "key": key, "event_type": event_type, "tp": tp, "value": value}
        for _seq, topic, tp, meta, joined in bundles
        for (event_id, key, event_type), value in unpack(meta, joined)
    ]
    if rows:
        bind.execute(
            text(
                "INSERT INTO outbox (event_id, topic, key, event_type, traceparent, value) "
                "VALUES (:event_id, :topic, :key, :event_type, :tp, :value)"
            ),
            rows,
        )


BUNDLE = 10_000  # events in one outbox row at most (the relay reads about ``batch`` events at once)
_COLUMNS = ("topic", "traceparent", "value", "events", "meta")
# An event as the outbox keeps it: (event id, key, type, CloudEvent JSON).
Encoded = tuple[str, str, str, bytes]


def bundle_rows(topic: str, events: Sequence[Encoded]) -> list[tuple[Any, ...]]:
    """Outbox rows (in ``_COLUMNS`` order) holding ``events``, ``BUNDLE`` to a row, in order.

    Every bundle of one call carries one traceparent: one trace and one span, the write that made
    them (the request, or the consumer's transaction). A line feed inside an event's JSON would
    split it in two when read: refused here (orjson's output never has one).
    """
    rows = []
    for start in range(0, len(events), BUNDLE):
        part = events[start : start + BUNDLE]
        value = b"\n".join([e[3] for e in part])
        if value.count(b"\n") != len(part) - 1:
            raise ValueError("an outbox event's JSON holds a raw line feed")
        meta = orjson.dumps([e[:3] for e in part])
        rows.append((topic, new_traceparent(), value, len(part), meta))
    return rows


def unpack(meta: bytes, joined: bytes) -> Iterator[tuple[list[str], bytes]]:
    """A bundle's events in order, each as ``([id, key, type], CloudEvent JSON)``."""
    return zip(orjson.loads(meta), bytes(joined).split(b"\n"), strict=True)


def outbox_records(topic: str, events: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows for ``events`` given as ``(key, cloud_event_dict)`` pairs (one trace per call)."""
    return [dict(zip(_COLUMNS, row, strict=True)) for row in outbox_rows(topic, events)]


def outbox_rows(topic: str, events: Iterable[tuple[str, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """``outbox_records`` as tuples in ``enqueue_rows``' column order: plain data, made in a pool
    worker as well, that the service's process adds to the outbox as it is."""
    dumps = orjson.dumps
    return bundle_rows(topic, [(event["id"], key, event["type"], dumps(event)) for key, event in events])


async def enqueue(conn: AsyncConnection, table: Table, records: list[dict[str, Any]]) -> None:
    """Add rows to the outbox inside the caller's transaction (one COPY on PostgreSQL)."""
    await enqueue_rows(conn, table, [tuple(r[c] for c in _COLUMNS) for r in records])


async def enqueue_encoded(conn: AsyncConnection, table: Table, topic: str, events: Sequence[Encoded]) -> None:
    """``enqueue`` for events already encoded, as ``(event_id, key, event_type, json_value)``:
    the bulk path (a 10,000-mark batch), which never builds a dict per event."""
    await enqueue_rows(conn, table, bundle_rows(topic, events))


async def enqueue_rows(conn: AsyncConnection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add ``outbox_rows`` to the outbox inside the caller's transaction (one COPY on PostgreSQL)."""
    if not rows:
        return
    driver = await asyncpg_connection(conn)
    if driver is None:
        stmt = plain_insert(table)
        await execute_bound(conn, stmt, bind_tuples(stmt, conn.dialect, _COLUMNS, rows))
    else:
        await driver.copy_records_to_table(table.name, records=rows, columns=_COLUMNS)


async def pending_events(conn: AsyncConnection, table: Table) -> list[tuple[str, str, str, str, bytes]]:
    """Every event still in the outbox, in publishing order, as ``(topic, key, event id, type,
    CloudEvent JSON)`` (tests, and an operator's look at what is waiting)."""
    t = table.c
    rows = await conn.execute(select(t.topic, t.meta, t.value).order_by(t.seq))
    return [
        (topic, key, event_id, event_type, value)
        for topic, meta, joined in rows
        for (event_id, key, event_type), value in unpack(meta, joined)
    ]


# Outbox rows as the relay reads them: (seq, topic, traceparent, events, meta, value).
_Row = Sequence[Any]


class OutboxRelay:
    """Publishes outbox rows to Kafka; wake it after a commit for low latency, it also polls."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        producer: AIOKafkaProducer,
        batch: int = 10_000,
        poll_seconds: float = 1.0,
        depth: int = 4,
        rescan_seconds: float = 1.0,
        max_backlog: int = 0,
        gate: Gate = contextlib.nullcontext,
        vacuum_every: int = 50_000,
        backlog_seconds: float = 0.05,
        stall_seconds: float = 2.0,
    ) -> None:
        self._engine = engine
        self._gate = gate  # around the deletes: on SQLite they go before a bulk consumer's next write
        self._table = table
        self._producer = producer
        self._batch = batch
        self._poll = poll_seconds
        self._depth = max(1, depth)
        self._rescan = rescan_seconds
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one publisher at a time: the loop and a shutdown drain
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, str], int] = {}
        self._stopping = False
        self._max_backlog = max_backlog
        self._pending = 0  # events this process committed and has not yet seen published
        self._published = asyncio.Event()
        self._leader: AsyncConnection | None = None  # PostgreSQL: the session holding the lock
        self._leader_driver: Any = None  # its asyncpg connection: knows at once when the server ends it
        self._lead_checked = 0.0  # when the lead was last checked with a round trip
        self._vacuum_every = vacuum_every
        self._deleted = 0  # events deleted since the last VACUUM was started
        self._vacuum: asyncio.Task[None] | None = None
        self.vacuums = 0  # VACUUMs completed (tests read it)
        # The shared backlog as last read (PostgreSQL, leading or not: see ``room``).
        self._backlog_seconds = backlog_seconds
        self._stall_seconds = stall_seconds
        self._backlog_lock = asyncio.Lock()
        self._backlog_read_at = -backlog_seconds
        self._backlog = 0
        self._oldest: int | None = None
        self._oldest_since = time.monotonic()
        self.healthy = False

    @property
    def leading(self) -> bool:
        """True while this relay holds the lock: false at once when the server ends its session
        (the asyncpg connection sees the socket close), before the relay's loop next runs."""
        if self._engine.dialect.name != "postgresql":
            return True
        driver = self._leader_driver
        return self._leader is not None and not (driver is None or driver.is_closed())

    async def _lead(self) -> bool:
        """Take (or check we still hold) the relay lock of this outbox table; True if we lead.

        Holding it is checked without a round trip on every cycle — the session's asyncpg
        connection knows at once when the server ends it — and with one (``SELECT 1``) at most
        every ``rescan_seconds``, for a connection that died without a word."""
        if self._engine.dialect.name != "postgresql":
            return True
        if self._leader is not None:
            try:
                if not self.leading:
                    raise ConnectionError("the relay's session was closed by the server")
                if time.monotonic() >= self._lead_checked + self._rescan:
                    await self._leader.execute(text("SELECT 1"))
                    await self._leader.commit()
                    self._lead_checked = time.monotonic()
                return True
            except Exception as exc:  # noqa: BLE001 - the session (and its lock) is gone
                log.warning("outbox_relay_lost_lead", **error_fields(exc))
                await self._resign()
                return False
        conn = await self._engine.connect()
        try:
            key = lock_key(f"outbox:{self._table.name}")
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
            await conn.commit()  # the session lock outlives the transaction; never idle in one
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._leader = conn
        self._leader_driver = (await conn.get_raw_connection()).driver_connection
        self._lead_checked = time.monotonic()
        log.info("outbox_relay_leading", table=self._table.name)
        return True

    async def _resign(self) -> None:
        conn, self._leader, self._leader_driver = self._leader, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # closing the session releases the advisory lock

    def wake(self, events: int = 0) -> None:
        """Call after committing outbox rows (``events`` of them, if known: see ``room``)."""
        self._pending += events
        self._wake.set()

    async def room(self, wait_seconds: float = 5.0) -> None:
        """Backpressure: while more than ``max_backlog`` events are waiting to be published, wait
        (up to ``wait_seconds``) for the relay to catch up.

        Ingest and its relay share one process (one core under the GIL): without this the API
        takes batches faster than the relay publishes them and the backlog grows without bound.
        A process that does not lead (several on one PostgreSQL database) reads the whole outbox's
        backlog (its bundles' event counts: a few rows, at most ``1 / backlog_seconds`` reads a
        second however many requests wait) and waits while it is over ``max_backlog`` *and* the
        leader is publishing — the oldest pending bundle changed within ``stall_seconds``.
        The leading process waits while the backlog is over *half* ``max_backlog`` and its relay
        is healthy: on PostgreSQL the whole outbox's (read as above), on SQLite (one process) the
        events it committed and has not yet seen published. So when the relay falls behind, the
        leader's requests are the first to wait and its core goes to publishing, while the other
        processes, which cannot publish, keep taking requests (with the same threshold for both, the
        others waited idle while the leader served its share and published everyone's: issue 8,
        the cores 14 % idle over a 5-minute two-process run). Never waits when nothing is
        publishing (Kafka down, relay disabled, this relay failing, no leader): durable first.
        """
        deadline = time.monotonic() + wait_seconds
        while self._max_backlog and not self._stopping:
            leading = self.leading
            if leading:
                if not self.healthy:
                    return
                backlog = self._pending
                if self._engine.dialect.name == "postgresql":
                    backlog = (await self._shared_backlog())[0]
                if backlog <= self._max_backlog // 2:
                    return
            else:
                backlog, moving = await self._shared_backlog()
                if backlog <= self._max_backlog or not moving:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if leading:
                self._published.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._published.wait(), timeout=left)
            else:
                await asyncio.sleep(min(left, self._backlog_seconds))

    async def _shared_backlog(self) -> tuple[int, bool]:
        """The outbox's pending events and whether its oldest bundle moved within
        ``stall_seconds`` (someone is publishing), read at most every ``backlog_seconds``."""
        async with self._backlog_lock:
            now = time.monotonic()
            if now >= self._backlog_read_at + self._backlog_seconds:
                async with autocommit_driver(self._engine) as driver:
                    if driver is None:  # SQLite: one process, always the leader
                        return 0, False
                    backlog, oldest = await driver.fetchrow(
                        f"SELECT coalesce(sum(events), 0), min(seq) FROM {self._table.name}"  # noqa: S608 - a table name
                    )
                self._backlog_read_at = time.monotonic()
                self._backlog = int(backlog)
                if oldest != self._oldest:
                    self._oldest, self._oldest_since = oldest, self._backlog_read_at
            return self._backlog, now < self._oldest_since + self._stall_seconds

    async def publish_once(self) -> int:
        """Publish one batch of pending events in commit order; returns how many were published
        (0 when another process's relay leads: it publishes them)."""
        async with self._lock:
            if not await self._lead():
                return 0
            rows = await self._fetch(after=None)
            if rows:
                await self._settle(await self._send(rows), rows)
            return sum(row[3] for row in rows)

    async def _fetch(self, after: int | None) -> list[_Row]:
        """Pending bundles in ``seq`` order (only those above ``after`` if given): from the first,
        as many as hold fewer than ``batch`` events before them (at least one, at most ``batch``)."""
        t = self._table
        async with autocommit_driver(self._engine) as driver:
            if driver is not None:  # one statement: no transaction around it
                records: list[Any] = await driver.fetch(
                    f"SELECT seq, topic, traceparent, events, meta, value FROM {t.name} WHERE seq IN ("  # noqa: S608 - a table name, not input
                    "SELECT seq FROM (SELECT seq, sum(events) OVER (ORDER BY seq) - events AS before "
                    f"FROM {t.name} WHERE seq > $1 ORDER BY seq LIMIT $2) AS w WHERE before < $2) "
                    "ORDER BY seq",
                    after if after is not None else -1,
                    self._batch,
                )
                return records  # asyncpg Records: indexable like the tuples below
        window = (
            select(t.c.seq, (func.sum(t.c.events).over(order_by=t.c.seq) - t.c.events).label("before"))
            .where(t.c.seq > (after if after is not None else -1))
            .order_by(t.c.seq)
            .limit(self._batch)
            .subquery()
        )
        query = (
            select(t.c.seq, t.c.topic, t.c.traceparent, t.c.events, t.c.meta, t.c.value)
            .where(t.c.seq.in_(select(window.c.seq).where(window.c.before < self._batch)))
            .order_by(t.c.seq)
        )
        async with self._engine.connect() as conn:
            rows: list[_Row] = [tuple(r) for r in await conn.execute(query)]
            await conn.rollback()
        return rows

    async def _settle(self, futures: list[asyncio.Future[Any]], rows: Sequence[_Row]) -> None:
        """Wait for Kafka to acknowledge ``rows``, then delete exactly them.

        Not a seq range: on PostgreSQL a lower seq can become visible after a higher one
        (sequences are allocated before commit), so a range could take an unsent row.
        """
        await asyncio.gather(*futures)
        seqs = [row[0] for row in rows]
        t = self._table
        async with autocommit_driver(self._engine) as driver:
            if driver is not None:  # one statement, atomic on its own
                await driver.execute(f"DELETE FROM {t.name} WHERE seq = ANY($1::bigint[])", seqs)  # noqa: S608 - a table name
        if driver is None:
            async with self._gate(), self._engine.begin() as conn:
                for start in range(0, len(seqs), 5000):
                    await conn.execute(delete(t).where(t.c.seq.in_(seqs[start : start + 5000])))
        published = Tally[str]()
        for row in rows:
            published[row[1]] += row[3]
        for topic, n in published.items():
            PUBLISHED.labels(topic).inc(n)
        events = published.total()
        self._pending = max(0, self._pending - events)
        self._published.set()
        if self._engine.dialect.name == "postgresql":
            self._deleted += events
            if self._deleted >= self._vacuum_every and (self._vacuum is None or self._vacuum.done()):
                self._deleted = 0
                self._vacuum = asyncio.create_task(self._vacuum_outbox())

    async def _vacuum_outbox(self) -> None:
        """``VACUUM`` the outbox (PostgreSQL), in the background of the relay.

        The outbox is a queue: every row is inserted, published and deleted within seconds. Left
        to autovacuum, which looks at a database once a minute (``autovacuum_naptime``) and then
        works at a throttled pace, the dead rows of 30,000 events/s piled up by the million and
        the table grew to gigabytes of dead space that every read of it walked through (issue 8:
        PostgreSQL's CPU doubled over a 5-minute ingest run). Vacuumed every ``vacuum_every``
        deleted events (their bundles' rows and compressed chunks), its space is reused at once
        and it stays the size of its backlog. VACUUM
        takes no lock that writers or the relay wait for; one runs at a time; a failure (or a
        database role that does not own the table, for which VACUUM only warns) is logged and
        the next is tried after as many events again.
        """
        try:
            async with self._engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.execute(text(f"VACUUM {self._table.name}"))
            self.vacuums += 1
        except Exception as exc:  # noqa: BLE001 - housekeeping: never stop the relay
            log.warning("outbox_vacuum_failed", **error_fields(exc))

    async def _partition(self, topic: str, key: str, key_bytes: bytes) -> int:
        slot = (topic, key)
        partition = self._partition_of.get(slot)
        if partition is None:
            if topic not in self._partitions:
                self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
            every = self._partitions[topic]
            partition = self._partitioner(key_bytes, every, every)
            if len(self._partition_of) >= 1_000_000:
                self._partition_of.clear()
            self._partition_of[slot] = partition
        return partition

    async def _send(self, rows: Sequence[_Row]) -> list[asyncio.Future[Any]]:
        """Queue the events of ``rows`` as record batches per partition, in commit order within
        each partition; each with headers ``ce_id``, ``ce_type`` and its bundle's ``traceparent``.

        Batching by hand (the same murmur2 partitioner as ``send``, so keys land where Java and
        every other client put them) is about twice as fast as one ``send`` per record.
        """
        futures: list[asyncio.Future[Any]] = []
        open_batches: dict[tuple[str, int], Any] = {}
        for _seq, topic, traceparent_text, _events, meta, joined in rows:
            traceparent = traceparent_text.encode()
            for (event_id, key_text, event_type), value in unpack(meta, joined):
                key = key_text.encode()
                partition = self._partition_of.get((topic, key_text))
                if partition is None:
                    partition = await self._partition(topic, key_text, key)
                headers = [
                    ("ce_id", event_id.encode()),
                    ("ce_type", event_type.encode()),
                    ("traceparent", traceparent),
                ]
                slot = (topic, partition)
                batch = open_batches.get(slot)
                if batch is None:
                    batch = open_batches[slot] = self._producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await self._producer.send_batch(batch, topic, partition=partition))
                    batch = open_batches[slot] = self._producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError("an outbox event is larger than the producer's batch size")
        for (topic, partition), batch in open_batches.items():
            futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _pump(self) -> int:
        """Publish until the outbox is empty, up to ``depth`` batches in flight; returns the count.

        The next batch is read past the last seq already handed to the producer, so it never
        re-reads rows in flight. Every ``rescan_seconds`` (and when the tail is reached) the
        pipeline drains and reading starts again from the lowest pending seq, which picks up any
        row whose lower seq became visible late.
        """
        published = 0
        # SQLite: a row's seq is given under the write lock it commits with, so rows become visible
        # in seq order, above every row still in the table: no rescans. (A seq is the rowid, one
        # above the largest *remaining*: once every row up to the cursor is deleted a seq can be
        # reused below it, which is why the pump returns, and starts again from the lowest, as
        # soon as nothing is in flight.)
        ordered = self._engine.dialect.name == "sqlite"
        inflight: deque[tuple[asyncio.Task[None], int]] = deque()
        cursor: int | None = None
        rescan_at = time.monotonic() + self._rescan
        try:
            while not self._stopping:
                rows = await self._fetch(after=cursor)
                events = sum(row[3] for row in rows)
                if rows:
                    task = asyncio.ensure_future(self._settle(await self._send(rows), rows))
                    inflight.append((task, events))
                    cursor = rows[-1][0]
                while inflight and (len(inflight) >= self._depth or inflight[0][0].done()):
                    task, n = inflight.popleft()
                    await task
                    published += n
                if ordered:
                    if rows:
                        continue
                    if not inflight:
                        return published
                    # Wait for new rows or the oldest settle, not for every delete in flight: on
                    # SQLite a delete queues for the write lock behind a consumer's transaction,
                    # and a first-day signal committed meanwhile would wait with it.
                    woken = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait(
                        {woken, inflight[0][0]}, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
                    )
                    woken.cancel()
                    self._wake.clear()
                    continue
                if events < self._batch or time.monotonic() >= rescan_at:
                    while inflight:
                        task, n = inflight.popleft()
                        await task
                        published += n
                    if not rows and cursor is None:
                        return published
                    cursor = None
                    rescan_at = time.monotonic() + self._rescan
        finally:
            for task, _ in inflight:
                task.cancel()
            for task, _ in inflight:
                with contextlib.suppress(BaseException):
                    await task
        return published

    async def run(self) -> None:
        """Publish until stopped; errors are logged and retried after a pause (nothing is dropped)."""
        try:
            while not self._stopping:
                try:
                    async with self._lock:
                        if await self._lead():
                            await self._pump()
                    self.healthy = True
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, retry later
                    self.healthy = False
                    self._published.set()  # release anyone waiting for room: the relay is not publishing
                    log.warning("outbox_relay_retry", **error_fields(exc))
                    await asyncio.sleep(self._poll)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
                self._wake.clear()
        finally:
            await self._resign()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._vacuum is not None:
            self._vacuum.cancel()
