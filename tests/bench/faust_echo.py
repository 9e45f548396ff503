"""The floor under the worker: a bare Faust agent that answers each interaction with a
10-item Recommendations message, through the same broker, topics and Faust settings.

Run as ``python -m tests.bench.faust_echo worker`` with the worker's environment
(``streams.process.settings_env``); ``bench_latency`` drives it with the same driver
(``streams.load.drive``) as the worker. It parses the interaction and builds the message
with the project's own event models, so what is left to the worker over this floor is
its own work: state, learning, ranking.
"""

from __future__ import annotations

from datetime import UTC, datetime

import faust

from streams import kafka_compat
from streams.events import Interaction, Reason, Recommendations, RecommendedItem
from streams.settings import Settings

LIST_LENGTH = 10


def echo_app(s: Settings) -> faust.App:
    # The worker's broker-facing patches and settings, so the two differ only in the agent.
    kafka_compat.install(s)
    app = faust.App(
        f"{s.consumer_group}-echo",
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
            await recommendations.send(key=event.key, value=message.to_bytes())

    return app


if __name__ == "__main__":
    echo_app(Settings()).main()
