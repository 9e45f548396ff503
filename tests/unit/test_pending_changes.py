"""A user's entry keeps an event's item changes only until they are durable: acknowledged
by the broker, or behind the offset the group committed (re-sent if redelivered before)."""

from __future__ import annotations

from encoders.fusion import AverageFusion, ModalityProjection
from encoders.hashing import HashingTextEncoder
from encoders.media import MediaFetcher, MediaPolicy
from encoders.multimodal import MultimodalEncoder
from streams.app import StreamrecApp
from streams.settings import Settings


def test_acknowledged_item_changes_are_dropped_from_the_users_entry(tmp_path) -> None:
    encoder = MultimodalEncoder(
        HashingTextEncoder(),
        AverageFusion(ModalityProjection({"text": 384}, common_dim=384)),
        MediaFetcher(MediaPolicy()),
    )
    app = StreamrecApp(Settings(data_dir=tmp_path), encoder)
    app.acked_changes = {(0, 5), (1, 9)}
    pending = {"0:5": "acknowledged", "0:6": "in flight", "1:2": "in flight"}
    assert app._not_durable(pending, "interactions") == {"0:6": "in flight", "1:2": "in flight"}
    assert app.acked_changes == {(1, 9)}  # forgotten once dropped; the other user's stays
