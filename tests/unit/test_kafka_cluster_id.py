"""The cluster id the Kafka broker's storage is formatted with."""

from __future__ import annotations

import base64
import uuid

import pytest

from streams import broker


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage reads ``--cluster-id -...`` as a missing argument and refuses to
    format: one broker start in 64 failed this way before ids starting with "-" were
    drawn again (as Kafka's ``Uuid.randomUuid`` does)."""
    dash_first = uuid.UUID(bytes=b"\xf8" * 16)  # base64url "-Pj4..."
    drawn = iter([dash_first, dash_first, uuid.UUID(int=1 << 100)])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(drawn))
    cluster_id = broker._kafka_cluster_id()
    assert not cluster_id.startswith("-")
    assert base64.urlsafe_b64decode(cluster_id + "==") == uuid.UUID(int=1 << 100).bytes
