"""The floor under the worker: a bare Faust agent that answers each interaction with a
10-item Recommendations message, through the same broker, topics and Faust settings.

Run as ``python -m tests.bench.faust_echo worker`` with the worker's environment
(``streams.process.settings_env``); ``bench_latency`` drives it with the same driver
(``streams.load.drive``) as the worker. It parses the interaction and builds the message
with the project's own event models, so what is left to the worker over this floor is
its own work: state, learning, ranking.

With ``STREAMREC_ECHO_RECORDS=worker`` in its environment it also moves the worker's
records, without the worker's work: per interaction it writes a users-table entry
("table"), sends an item-changes record to item-updates beside the list ("changes"), and
a consumer like the worker's replica reads item-updates back and parses every record
("read_back"), with each record of the size the worker writes at 1,000 items
(docs/scale.md). What is left to the worker over that floor is its computing alone. A
comma list of those parts (``STREAMREC_ECHO_RECORDS=table,changes``) moves only them,
to tell what each costs.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import kafka_compat
from streams.admin import partition_ids
from streams.events import Interaction, Reason, Recommendations, RecommendedItem
from streams.settings import Settings
from streams.users_table import users_table

LIST_LENGTH = 10
#: The worker's records per click at 1,000 items: the user's state and the item changes
#: (packed vectors, measured in docs/scale.md), written as JSON like the worker's.
STATE_BYTES = 5_400
CHANGES_BYTES = 4_400
#: The worker's records beyond the list, each of which the echo can move.
WORKER_RECORDS = ("table", "changes", "read_back")


def records_moved(spec: str) -> set[str]:
    """The parts of ``WORKER_RECORDS`` named by ``STREAMREC_ECHO_RECORDS``: "list" (none),
    "worker" (all) or a comma list of them."""
    parts = set(WORKER_RECORDS) if spec == "worker" else set(spec.split(",")) - {"list", ""}
    if unknown := parts - set(WORKER_RECORDS):
        raise SystemExit(
            f"STREAMREC_ECHO_RECORDS: unknown {', '.join(sorted(unknown))}; use list, worker"
            f" or a comma list of {', '.join(WORKER_RECORDS)}"
        )
    return parts


def echo_app(s: Settings) -> faust.App:
    # The worker's broker-facing patches and settings, so the two differ only in the agent.
    kafka_compat.install(s)
    moved = records_moved(os.environ.get("STREAMREC_ECHO_RECORDS", "list"))
    app = faust.App(
        "-".join([f"{s.consumer_group}-echo", *sorted(moved)]),
        broker=[f"kafka://{host}" for host in s.effective_bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(s.data_dir / "faust-echo"),
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        consumer_auto_offset_reset="latest",
        consumer_max_fetch_size=s.consumer_max_fetch_bytes,
        broker_max_poll_records=s.consumer_max_poll_records,
        broker_max_poll_interval=s.consumer_max_poll_interval_s,
        stream_buffer_maxsize=s.stream_buffer_max_events,
        web_host=s.web_host,
        web_bind=s.web_host,
        web_port=s.web_port,
        web_in_thread=False,
        producer_acks=-1,
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": s.partitions}
    interactions = app.topic(s.topic_interactions, **raw)
    recommendations = app.topic(s.topic_recommendations, **raw)

    users = users_table(app, s.partitions) if "table" in moved else None
    item_updates = app.topic(s.topic_item_updates, **raw)
    if "read_back" in moved:

        @app.task
        async def read_back() -> None:
            """item-updates read and parsed by a consumer of its own, as the replica does."""
            consumer = AIOKafkaConsumer(
                bootstrap_servers=s.effective_bootstrap_servers.split(","),
                group_id=None,
                enable_auto_commit=False,
                **s.aiokafka_options(),
            )
            await consumer.start()
            partitions: set[int] = set()
            while not partitions:  # created before the echo starts; metadata may lag
                partitions = await partition_ids(s, s.topic_item_updates)
                await asyncio.sleep(0.5)
            consumer.assign([TopicPartition(s.topic_item_updates, p) for p in partitions])
            await consumer.seek_to_end()
            try:
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=500)
                    for messages in batches.values():
                        for message in messages:
                            json.loads(message.value)
                    await asyncio.sleep(0)
            finally:
                await consumer.stop()

    @app.agent(interactions, name="echo")
    async def echo(stream: faust.StreamT) -> None:
        async for event in stream.events():
            interaction = Interaction.model_validate_json(event.value)
            message = Recommendations(
                user_id=interaction.user_id,
                items=[
                    RecommendedItem(
                        item_id=f"echo-{n}",
                        score=1.0 - n / LIST_LENGTH,
                        title=f"Echo {n}",
                        reasons=[
                            Reason(source="item-item", because_of=interaction.item_id, score=0.5)
                        ],
                    )
                    for n in range(LIST_LENGTH)
                ],
                trigger_event_id=interaction.event_id,
                based_on_events=0,
                generated_at=datetime.now(UTC),
                model_version="echo",
            )
            if moved:
                changes = json.dumps(
                    {"event_id": interaction.event_id, "changes": "c" * CHANGES_BYTES}
                )
                if users is not None:
                    users[interaction.user_id] = {
                        "state": "s" * STATE_BYTES,
                        "pending": {str(event.message.offset): changes},
                        "latest": message.model_dump(mode="json"),
                    }
                if "changes" in moved:
                    await item_updates.send(key=event.key, value=changes.encode())
            await recommendations.send(key=event.key, value=message.to_bytes())

    return app


if __name__ == "__main__":
    echo_app(Settings()).main()
