"""Static group membership that still leaves the group on a clean stop.

Each worker joins its consumer group under a stable ``group.instance.id`` (Kafka static
membership, KIP-345), so a worker restarted after a crash takes its partitions back at
once. That is needed on noida-db, which never expires a killed member: the restarted
worker otherwise rejoined every session timeout and was never given a partition.

aiokafka sends no LeaveGroup for a static member, since a static member is expected to
come back. A worker stopped on purpose may not, though (scaling down), and on noida-db
its partitions would then wait forever. So a clean stop leaves the group as a dynamic
member does; only a crash leaves the member behind, to be replaced by its restart.

Kafka removes a silent static member after its session timeout, as KIP-345 intends (a
static member stopped for good hands its partitions on after
``consumer_session_timeout_s``), so this is installed on noida-db only:
``tests/integration/test_broker_differences.py`` shows both behaviours.
"""

from __future__ import annotations

import logging

import aiokafka.errors as errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.group import LeaveGroupRequest

from streams.kafka_compat.counts import fire
from streams.kafka_compat.patching import ClassPatch

log = logging.getLogger(__name__)

_original_maybe_leave_group = GroupCoordinator._maybe_leave_group


async def _leave_group_also_when_static(self: GroupCoordinator) -> None:
    if self.generation > 0 and self._group_instance_id is not None:
        fire("static_leave")
        try:
            await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
        except errors.KafkaError as error:
            log.warning("LeaveGroup of static member %s failed: %s", self.member_id, error)
    await _original_maybe_leave_group(self)


PATCH = ClassPatch(
    "leave_on_stop",
    GroupCoordinator,
    "_maybe_leave_group",
    _leave_group_also_when_static,
    brokers=frozenset({"noida-db"}),
    reason="noida-db never expires a static member: a worker stopped for good keeps its "
    "partitions forever",
)
