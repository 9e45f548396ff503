"""A SyncGroup answer with no assignment at all is a reason to rejoin (noida-db only).

A member's assignment is never empty bytes when the group leader assigned it, even to
nothing: Faust's assignor names every member, and an assignment of no partitions still
encodes its version and an empty list. noida-db has been seen answering the leader's own
SyncGroup with no error and zero bytes, as the second of two workers joined
(``test_scale_out`` in CI). aiokafka cannot decode that; the error ends its coordinator
routine for good, and the worker stays out of its group with no partition, never ready.
A Kafka broker answers such a race with ``REBALANCE_IN_PROGRESS``, which aiokafka
handles by rejoining, so this does the same: the join is tried again after the usual
backoff. ``tests/unit/test_kafka_compat.py`` drives the patched request with the answer
noida-db gave.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance

from streams.kafka_compat.counts import fire
from streams.kafka_compat.patching import ClassPatch

log = logging.getLogger(__name__)

_original_send_sync_group_request = CoordinatorGroupRebalance._send_sync_group_request


async def _sync_group_rejoining_on_no_assignment(
    self: CoordinatorGroupRebalance, request: Any
) -> bytes | None:
    assignment: bytes | None = await _original_send_sync_group_request(self, request)
    if assignment is not None and len(assignment) == 0:
        fire("empty_assignment_rejoin")
        log.warning("group %s: the broker sent no assignment; joining again", self.group_id)
        self._coordinator.request_rejoin()
        return None
    return assignment


PATCH = ClassPatch(
    "rejoin_on_empty_assignment",
    CoordinatorGroupRebalance,
    "_send_sync_group_request",
    _sync_group_rejoining_on_no_assignment,
    brokers=frozenset({"noida-db"}),
    reason="noida-db can answer a SyncGroup with empty bytes and no error, which aiokafka "
    "cannot decode: its coordinator stops and the worker never gets a partition",
)
