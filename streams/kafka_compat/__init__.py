"""Everything the worker changes in Faust's and aiokafka's behaviour, in one place.

Class patches (``PATCHES``; each module says why, ``docs/kafka.md`` sums up which broker
needs which and the tests that show it):

- ``fetch_backoff``: a pause after an empty fetch. noida-db only: it answers empty
  fetches at once, where Kafka long-polls.
- ``group_membership``: a static member leaves its group on a clean stop. noida-db only:
  it never expires a member, where Kafka removes it after its session timeout.
- ``empty_assignment``: a SyncGroup answered with no assignment bytes means rejoin.
  noida-db only: Kafka answers that race with ``REBALANCE_IN_PROGRESS``.
- ``committed_seek``: the seek to committed offsets also covers offsets 0 and none
  (aiokafka skips them). Every broker: a client bug.
- ``paused_poll``: a worker with nothing to fetch still counts as polling
  (robinhood/faust#517). Every broker: a client bug.
- ``undecodable_batches``: a fetched batch that cannot be decoded (a codec no library
  here reads, a corrupt payload) is skipped and reported, not raised into Faust's
  consumer thread, which crash-looped the worker. Every broker.
- ``read_committed``: the worker's consumer reads only committed records, so an aborted
  transaction's events never apply (Faust reads ``read_uncommitted`` unless the app is
  exactly-once). Every broker.

The web server's options (``web_server``): request bodies not inflated, idle connections
closed, connections bounded in number; Faust's aiohttp runner takes none of its own.

Services the app runs on every broker, since the record loss they repair was never
traced to the broker (``docs/kafka.md``): ``offset_continuity`` (offsets skipped before
the agent are read directly) and ``delivery_watchdog`` (stalled partitions and table
recoveries read again). Every defence counts its firings (``counts.py``), exposed as
``streamrec_kafka_compat_fired_total``.

``tests/unit/test_kafka_compat.py`` fails when faust-streaming or aiokafka change version or a
patched function its signature: check the patch against the new code, then update it.
"""

from __future__ import annotations

import logging

from streams.kafka_compat import (
    committed_seek,
    empty_assignment,
    fetch_backoff,
    group_membership,
    paused_poll,
    read_committed,
    undecodable_batches,
)
from streams.kafka_compat.patching import ClassPatch, Flavour
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Every class patch, installed or put back by ``install``.
PATCHES: tuple[ClassPatch, ...] = (
    fetch_backoff.PATCH,
    group_membership.PATCH,
    empty_assignment.PATCH,
    committed_seek.PATCH,
    paused_poll.PATCH,
    undecodable_batches.PATCH,
    read_committed.PATCH,
)


def patches_for(flavour: Flavour) -> list[ClassPatch]:
    """The class patches a broker of ``flavour`` needs."""
    return [patch for patch in PATCHES if flavour in patch.brokers]


def install(settings: Settings) -> list[str]:
    """Install the patches the settings' broker needs and put back the others (they are
    process-wide); returns the names installed."""
    flavour = settings.effective_broker_flavour
    fetch_backoff.set_backoff(settings.empty_fetch_backoff_ms / 1000)
    known = {patch.name for patch in PATCHES}
    unknown = sorted(set(settings.kafka_compat_disabled) - known)
    if unknown:
        raise ValueError(
            f"kafka_compat_disabled: no patch named {', '.join(unknown)}; "
            f"the patches are {', '.join(sorted(known))}"
        )
    wanted = [p for p in patches_for(flavour) if p.name not in settings.kafka_compat_disabled]
    for patch in PATCHES:
        if patch in wanted:
            patch.install()
        else:
            patch.uninstall()
    names = [patch.name for patch in wanted]
    log.info("compatibility patches for %s: %s", flavour, ", ".join(names) or "none")
    if settings.kafka_compat_disabled:
        log.warning("compatibility patches disabled: %s", ", ".join(settings.kafka_compat_disabled))
    return names
