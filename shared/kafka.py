"""Kafka clients: the idempotent producer, consumers, and creation of the contract's topics."""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.events import Topic

DEFAULT_PARTITIONS = 6
# Topics that hold state rather than a history: the latest event of each key is kept for good, so
# a consumer starting from scratch still rebuilds everything (shared.directory).
COMPACTED = {Topic.DIRECTORY.value: {"cleanup.policy": "compact"}}


def producer(bootstrap: str) -> AIOKafkaProducer:
    """Idempotent, ``acks=all``: a retried send is never written twice and a 200 is never lost.
    ``linger_ms=0``: a lone event (a first-day signal) goes at once instead of waiting 5 ms for
    company at each of its two hops (mark, then signal: at rest mark → signal p99 141 → 81 ms on
    PostgreSQL). The relays still send in batches: whatever they queue while a request is in
    flight goes in the next one (ingest's published marks/s measured the same)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=30_000,
    )


def consumer(
    bootstrap: str, group_id: str | None, *topics: str, from_beginning: bool = True
) -> AIOKafkaConsumer:
    """A consumer that commits offsets itself, after its effects are durable (the inbox pattern)."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
    )


async def ensure_topics(bootstrap: str, partitions: int = DEFAULT_PARTITIONS) -> list[str]:
    """Create any contract topic that does not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        missing = [t.value for t in Topic if t.value not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process created it first
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=partitions,
                            replication_factor=1,
                            topic_configs=COMPACTED.get(name),
                        )
                        for name in missing
                    ]
                )
            created = missing
    finally:
        await admin.close()
    return created


async def partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(described[0]["partitions"])
