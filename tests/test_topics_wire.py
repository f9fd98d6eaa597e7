"""Topic matching and the wire codec, checked against simple references."""

from __future__ import annotations

import itertools
import random

import pytest

from latentwire._proto import bus_pb2 as pb
from latentwire._topics import topic_matches, validate_filter, validate_topic
from latentwire._wire import FrameDecoder, Oversize, encode_batch
from latentwire.errors import InvalidTopic, ProtocolError
from latentwire.hub.routing import TopicTree


def test_topic_tree_agrees_with_topic_matches() -> None:
    rng = random.Random(0)
    levels = ["a", "b", "c"]
    topics = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(levels, repeat=n)]
    filters = sorted({"/".join(rng.choice(levels + ["+", "+"]) for _ in range(rng.randint(1, 3)))
                      + rng.choice(["", "/#"]) for _ in range(60)} | {"#"})
    tree: TopicTree[str] = TopicTree()
    for f in filters:
        assert tree.add(validate_filter(f), f)
    assert not tree.add(filters[0], filters[0])
    for topic in topics:
        assert tree.match(validate_topic(topic)) == {f for f in filters if topic_matches(f, topic)}, topic
    for f in filters:
        assert tree.remove(f, f)
    assert len(tree) == 0 and tree.match("a/b") == set() and not tree.remove("a", "a")


@pytest.mark.parametrize("pattern, topic, expected", [
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("a/+", "a", False), ("+/+", "a/b", True),
    ("a/+/c", "a/b/c/d", False), ("#", "x", True), ("a/b", "a/b", True), ("a/b", "a/c", False),
])
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_validate_names_the_problem() -> None:
    with pytest.raises(InvalidTopic, match="must be a str, not int"):
        validate_topic(5)
    with pytest.raises(InvalidTopic, match="NUL"):
        validate_topic("a\x00b")


def frame(seq: int) -> pb.Frame:
    return pb.Frame(publish=pb.Publish(seq=seq, envelope=pb.Envelope(id=f"m{seq}", topic="t")))


@pytest.mark.parametrize("sizes", [[0, 10, 100], [5000], [70_000, 3, 200_000, 1]])
def test_batches_and_chunks_round_trip(sizes: list[int]) -> None:
    max_frame = 65_536
    payloads = [bytes(random.Random(n).randbytes(n)) for n in sizes]
    messages = encode_batch([(frame(i), p) for i, p in enumerate(payloads)], max_frame)
    assert all(len(m) <= max_frame for m in messages)
    decoder = FrameDecoder(max_payload=1 << 20)
    out = [f for m in messages for f in decoder.feed(m)]
    assert [(f.publish.seq, bytes(p)) for f, p in out] == list(enumerate(payloads))
    assert all(f.payload_size == 0 for f, _ in out)


def test_oversize_payload_is_skipped_not_buffered() -> None:
    messages = encode_batch([(frame(1), b"x" * 300_000), (frame(2), b"ok")], 65_536)
    decoder = FrameDecoder(max_payload=100_000)
    out = [f for m in messages for f in decoder.feed(m)]
    assert isinstance(out[0][1], Oversize) and out[0][1].size == 300_000
    assert (out[1][0].publish.seq, bytes(out[1][1])) == (2, b"ok")


@pytest.mark.parametrize("junk, reason", [
    (b"\x01\x02", "truncated frame prefix"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00abc", r"declares 16\+0 bytes"),
    (b"\x00\x00\x00\x00\x03\x00\x00\x00abc", "continuation frame without"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x00\xff\xff", "not a valid Frame"),
])
def test_malformed_messages_raise_and_reset(junk: bytes, reason: str) -> None:
    decoder = FrameDecoder(max_payload=1 << 20)
    with pytest.raises(ProtocolError, match=reason):
        decoder.feed(junk)
    [(f, p)] = decoder.feed(encode_batch([(frame(9), b"fine")], 65_536)[0])
    assert f.publish.seq == 9 and bytes(p) == b"fine"
