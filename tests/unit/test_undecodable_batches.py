"""A fetched batch that cannot be decoded is skipped and reported; its neighbours are read.

Batches are built by aiokafka's own builder and read by its own ``PartitionRecords`` (the
fetcher's class), with the patch installed: exactly what a worker's consumer does with a
fetch, without a broker (``tests/integration/test_compressed_records.py`` has the broker).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.kafka_compat import undecodable_batches
from streams.kafka_compat.undecodable_batches import PATCH, SkippedBatch, SkippedBatches

TP = TopicPartition("interactions", 0)
GZIP, LZ4, ZSTD, SNAPPY = 1, 3, 4, 2
# Kafka's record batch (v2): base offset, length, leader epoch, magic, then the CRC of
# everything from the attributes on; the records start after a 61-byte header.
CRC, ATTRIBUTES, HEADER = 17, 21, 61


def batch(base_offset: int, values: list[bytes], codec: int = 0) -> bytearray:
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=1_700_000_000_000, key=b"u", value=value, headers=[])
    data = builder.build()
    struct.pack_into(">q", data, 0, base_offset)
    return data


def with_crc(data: bytearray) -> bytearray:
    struct.pack_into(">I", data, CRC, calc_crc32c(bytes(data[ATTRIBUTES:])))
    return data


def corrupt_payload(data: bytearray) -> bytearray:
    """The compressed records garbled, the CRC made to match: only decoding can tell."""
    data[HEADER:] = bytes(b ^ 0x5A for b in data[HEADER:])
    return with_crc(data)


def unknown_codec(data: bytearray) -> bytearray:
    struct.pack_into(">h", data, ATTRIBUTES, 5)  # codecs 5 to 7: none exists
    return with_crc(data)


def wrong_crc(data: bytearray) -> bytearray:
    data[CRC] ^= 0xFF
    return data


@pytest.fixture
def skipped(monkeypatch: pytest.MonkeyPatch) -> Iterator[SkippedBatches]:
    fresh = SkippedBatches()
    monkeypatch.setattr(undecodable_batches, "SKIPPED", fresh)
    installed = PATCH.installed
    PATCH.install()
    yield fresh
    if not installed:
        PATCH.uninstall()


def fetch(data: bytes, offset: int = 0) -> tuple[list[tuple[int, bytes]], int]:
    """The records a consumer hands on from one fetch, and where it fetches next."""
    records = PartitionRecords(
        TP, MemoryRecords(data), [], offset, None, None, True, READ_UNCOMMITTED
    )
    got = [(record.offset, record.value) for record in records]
    return got, records.next_fetch_offset


def test_without_the_patch_an_undecodable_batch_raises_out_of_the_fetch() -> None:
    data = batch(0, [b"a"]) + unknown_codec(batch(1, [b"b"]))
    PATCH.uninstall()
    with pytest.raises(Exception, match="codec"):
        fetch(bytes(data))


@pytest.mark.parametrize(
    "spoil, error",
    [
        (lambda: unknown_codec(batch(2, [b"x", b"y"])), "UnsupportedCodecError"),
        (lambda: corrupt_payload(batch(2, [b"x" * 100, b"y"], GZIP)), "gzip"),
        (lambda: corrupt_payload(batch(2, [b"x" * 100, b"y"], LZ4)), "Error"),
        (lambda: corrupt_payload(batch(2, [b"x" * 100, b"y"], ZSTD)), "Error"),
        (lambda: corrupt_payload(batch(2, [b"x" * 100, b"y"], SNAPPY)), "Error"),
    ],
    ids=["unknown-codec", "corrupt-gzip", "corrupt-lz4", "corrupt-zstd", "corrupt-snappy"],
)
def test_an_undecodable_batch_is_skipped_reported_once_and_its_neighbours_read(
    skipped: SkippedBatches, spoil, error: str
) -> None:
    data = batch(0, [b"a", b"b"]) + spoil() + batch(4, [b"c"], LZ4)
    got, next_offset = fetch(bytes(data))
    assert got == [(0, b"a"), (1, b"b"), (4, b"c")]
    assert next_offset == 5
    (reported,) = skipped.drain()
    assert (reported.topic, reported.partition, reported.first, reported.end) == (TP.topic, 0, 2, 4)
    assert error in reported.error
    fetch(bytes(data))  # read again (a seek back, a catch-up): not reported again
    assert skipped.drain() == []


def test_a_batch_at_the_end_moves_the_position_past_it(skipped: SkippedBatches) -> None:
    got, next_offset = fetch(bytes(batch(0, [b"a"]) + unknown_codec(batch(1, [b"b", b"c"]))))
    assert got == [(0, b"a")] and next_offset == 3
    assert [(b.first, b.end) for b in skipped.drain()] == [(1, 3)]


def test_a_crc_mismatch_is_fetched_again_once_then_skipped(skipped: SkippedBatches) -> None:
    data = bytes(batch(0, [b"a"]) + wrong_crc(batch(1, [b"b"])) + batch(2, [b"c"]))
    got, next_offset = fetch(data)
    assert got == [(0, b"a")] and next_offset == 1, "stops before it: the next fetch reads it"
    assert skipped.drain() == []
    got, next_offset = fetch(data[len(batch(0, [b"a"])) :], offset=1)
    assert got == [(2, b"c")] and next_offset == 3
    assert [(b.first, b.end) for b in skipped.drain()] == [(1, 2)]


def test_a_fetch_starting_inside_a_batch_skips_the_records_before_the_offset(
    skipped: SkippedBatches,
) -> None:
    got, next_offset = fetch(bytes(batch(0, [b"a", b"b", b"c"], ZSTD)), offset=1)
    assert got == [(1, b"b"), (2, b"c")] and next_offset == 3


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(
        st.sampled_from(["plain", "gzip", "lz4", "zstd", "snappy", "unknown", "corrupt"]),
        min_size=1,
        max_size=6,
    ),
    flipped=st.integers(min_value=0, max_value=10_000),
)
def test_any_run_of_batches_hands_on_every_decodable_record_and_ends_past_them_all(
    kinds: list[str], flipped: int
) -> None:
    codecs = {"plain": 0, "gzip": GZIP, "lz4": LZ4, "zstd": ZSTD, "snappy": SNAPPY}
    data, expected, offset = bytearray(), [], 0
    for n, kind in enumerate(kinds):
        values = [f"{n}-{i}".encode() * 20 for i in range(n % 3 + 1)]
        built = batch(offset, values, codecs.get(kind, GZIP))
        if kind == "unknown":
            built = unknown_codec(built)
        elif kind == "corrupt":
            built = corrupt_payload(built)
        else:
            expected += [(offset + i, v) for i, v in enumerate(values)]
        data += built
        offset += len(values)
    fresh = SkippedBatches()
    original = undecodable_batches.SKIPPED
    undecodable_batches.SKIPPED = fresh
    PATCH.install()
    try:
        got, next_offset = fetch(bytes(data))
    finally:
        undecodable_batches.SKIPPED = original
        PATCH.uninstall()
    assert got == expected
    assert next_offset == offset
    skipped = sum(kind in ("unknown", "corrupt") for kind in kinds)
    assert len(fresh.drain()) == skipped


def test_skipped_batches_are_remembered_within_a_bound() -> None:
    batches = SkippedBatches(remembered=3)
    for first in range(5):
        batches.report(SkippedBatch("t", 0, first * 2, first * 2 + 2, "e"))
    assert len(batches.drain()) == 3
    batches.report(SkippedBatch("t", 0, 8, 10, "e"))  # remembered: not reported again
    batches.report(SkippedBatch("t", 0, 0, 2, "e"))  # forgotten (the oldest): reported
    assert [b.first for b in batches.drain()] == [0]
