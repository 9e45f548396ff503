"""A replica's snapshot is written from the items' vectors in place, off the event loop:
items read meanwhile wait for the file, so it holds the item side at its offsets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from aiokafka import TopicPartition

from models import item_snapshot
from models.packed import FLOAT32, pack
from streams.events import ItemRecord
from streams.replica import snapshot_path
from tests.unit.test_hostile_item_updates import DIM, ITEMS, item_records, replica


def test_items_read_while_a_snapshot_is_written_wait_for_it(tmp_path: Path) -> None:
    side = replica(tmp_path)
    partition = TopicPartition(side.settings.topic_item_updates, 0)
    first = [SimpleNamespace(value=value, offset=n) for n, value in enumerate(item_records())]
    reupload = ItemRecord(
        item_id=ITEMS[0],
        vectors={"content": pack(np.full(DIM, 7.0), "content", FLOAT32)},
        payload={},
    )
    again = [SimpleNamespace(value=reupload.model_dump_json().encode(), offset=len(ITEMS))]

    async def run() -> None:
        await side.fold_batches({partition: first})
        side.caught_up.set()
        at_snapshot = side.hybrid.content.vectors[: len(ITEMS)].copy()
        writing = asyncio.create_task(side.checkpoint())
        await asyncio.sleep(0)  # taken, and being written in a thread
        assert not writing.done()
        await side.fold_batches({partition: again})
        assert writing.done(), "the re-upload was folded while the snapshot was written"
        assert await writing > 0
        saved = item_snapshot.read(snapshot_path(side.settings))
        assert saved.header["extra"]["positions"] == {"0": len(ITEMS)}
        assert np.array_equal(saved.arrays["source/content/vectors"], at_snapshot)
        assert side.positions == {0: len(ITEMS) + 1}
        assert np.allclose(side.hybrid.content.vectors[0], np.full(DIM, DIM**-0.5))

    asyncio.run(run())
    side.store.stop()
