"""`streamrec topics` against the real broker: item-updates is created never to be deleted,
and existing topics with another partition count, or an item-updates created beforehand
to lose records (compacted, or deleted by age or size), are refused with the fix."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from streams.admin import ITEM_UPDATES_CONFIG, TopicLayoutError, create_topics
from streams.broker import Broker
from streams.cli import main
from streams.process import WorkerProcess, settings_env
from tests.conftest import isolated_settings, settings_with_team_topics, uncreated_settings

pytestmark = pytest.mark.integration


def topic_config(broker: Broker, topic: str) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        answer = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    finally:
        admin.close()
    [by_name] = answer.values()
    return {key: str(data["value"]) for key, data in by_name[topic].items()}


def test_item_updates_is_never_deleted_and_other_topics_keep_broker_defaults(
    broker: Broker, tmp_path
) -> None:
    settings = isolated_settings(broker, tmp_path)
    config = topic_config(broker, settings.topic_item_updates)
    assert {key: config.get(key) for key in ITEM_UPDATES_CONFIG} == ITEM_UPDATES_CONFIG
    assert topic_config(broker, settings.topic_interactions).get("retention.ms") != "-1"


def test_existing_topics_with_another_partition_count_are_refused_with_the_fix(
    broker: Broker, tmp_path
) -> None:
    created = isolated_settings(broker, tmp_path)  # 2 partitions each
    other = created.model_copy(update={"partitions": 3})
    with pytest.raises(TopicLayoutError) as refused:
        create_topics(other)
    message = str(refused.value)
    assert f"{created.topic_interactions} has 2" in message and "partitions = 3" in message
    assert "STREAMREC_PARTITIONS" in message and "\n" not in message

    result = CliRunner().invoke(main, ["topics"], env=settings_env(other))
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()  # one line, no traceback
    assert line.startswith("Error: topics differ from partitions = 3")
    create_topics(created)  # the matching settings pass


#: item-updates as a team might create it beforehand, each way losing records.
LOSING = {
    "compacted": {"cleanup.policy": "compact"},
    "the broker's default retention": {},
    "a size limit": {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "1000000",
    },
}


@pytest.mark.parametrize("configs", list(LOSING.values()), ids=list(LOSING))
def test_an_item_updates_created_to_lose_records_is_refused_with_the_fix(
    broker: Broker, tmp_path, configs: dict[str, str]
) -> None:
    settings = settings_with_team_topics(broker, tmp_path, {"topic_item_updates": configs})
    topic = settings.topic_item_updates
    with pytest.raises(TopicLayoutError) as refused:
        create_topics(settings)
    message = str(refused.value)
    assert f"{topic} may lose records" in message and "\n" not in message
    assert "--add-config cleanup.policy=delete,retention.ms=-1,retention.bytes=-1" in message
    # The worker ends at once with that line, instead of serving from a log that loses
    # its records (on Kafka a compacted one had lost 11 of a user's 14 changes during a 90 s run).
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        with pytest.raises(RuntimeError, match=r"the worker exited \(1\)"):
            worker.wait_until(lambda stats: False, timeout_s=90, what="an exit")
    finally:
        worker.stop()
    assert f"Error: {topic} may lose records" in worker.log_path.read_text()
    # The fix it names is enough.
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict(ITEM_UPDATES_CONFIG))]
        )
    finally:
        admin.close()
    create_topics(settings)


def test_a_users_changelog_created_to_lose_state_is_refused_with_the_fix(
    broker: Broker, tmp_path
) -> None:
    """A users-table changelog a team created beforehand with the broker's defaults
    (deleted after a week) would lose the state of every user idle for a week; the worker
    refuses it in one line with the fix, and starts once it is applied. A worker's own
    changelog (Faust creates it compacted) passes: a second start goes through."""
    settings = uncreated_settings(broker, tmp_path, encoders="hashing")
    topic = settings.users_changelog
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics(
            [NewTopic(topic, settings.partitions, 1, topic_configs={"cleanup.policy": "delete"})]
        )
        with pytest.raises(TopicLayoutError) as refused:
            create_topics(settings)
        message = str(refused.value)
        assert f"{topic} cannot keep users' state (cleanup.policy=delete" in message
        assert "\n" not in message
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"cleanup.policy": "compact"})]
        )
    finally:
        admin.close()
    create_topics(settings)
    fresh = uncreated_settings(broker, tmp_path / "fresh", encoders="hashing")
    for start in range(2):
        worker = WorkerProcess(fresh, tmp_path / f"worker-{start}.log")
        worker.start()
        try:
            worker.wait_until(lambda stats: True, timeout_s=180, what="web server up")
        finally:
            worker.stop()
    create_topics(fresh)  # the changelog the worker created is kept as it must be
