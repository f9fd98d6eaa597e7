"""Fuzzing the frame decoder (sdk/_wire.py) with hypothesis, on a bounded budget.

Properties: any bytes either decode or raise `ProtocolError` (never another exception, never
a hang); after an error the decoder is ready for the next message; whatever `iter_batches`
encodes, at any frame size that forces chunking, decodes to the same frames and payloads;
and a corrupted encoding never yields a payload longer than the cap.

The budget (examples per property) is fixed so the default suite stays fast; set
``LATENTWIRE_FUZZ_EXAMPLES`` for a longer run (e.g. nightly).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from latentwire._proto import bus_pb2 as pb
from latentwire._wire import PREFIX, FrameDecoder, Oversize, iter_batches
from latentwire.errors import ProtocolError

EXAMPLES = int(os.environ.get("LATENTWIRE_FUZZ_EXAMPLES", "300"))
# No example database: a run leaves nothing in the working tree.
budget = settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])

_text = st.text(max_size=40)
_envelope = st.builds(
    lambda id_, topic, recipient, headers, dtype, shape: _with_tensor(
        pb.Envelope(id=id_, topic=topic, recipient=recipient, headers=headers), dtype, shape),
    _text, _text, _text, st.dictionaries(_text, _text, max_size=3),
    st.sampled_from(["float32", "uint8", "bfloat16", "nonsense"]),
    st.lists(st.integers(-5, 2**40), max_size=4),
)
_seq = st.integers(0, 2**64 - 1)
_frame = st.one_of(
    st.builds(lambda seq, env: pb.Frame(publish=pb.Publish(seq=seq, envelope=env)), _seq, _envelope),
    st.builds(lambda seq, env: pb.Frame(deliver=pb.Deliver(seq=seq, envelope=env)), _seq, _envelope),
    st.builds(lambda seqs: pb.Frame(delivery_ack=pb.Ack(seqs=seqs)), st.lists(_seq, max_size=5)),
    st.builds(lambda agent: pb.Frame(hello=pb.Hello(agent=agent)), _text),
    st.just(pb.Frame(bye=pb.Bye())),
)
_wire_frames = st.lists(st.tuples(_frame, st.binary(max_size=3000)), min_size=1, max_size=6)


def _with_tensor(env: pb.Envelope, dtype: str, shape: list[int]) -> pb.Envelope:
    env.tensor.dtype = dtype
    env.tensor.shape.extend(shape)
    return env


def _good_message() -> tuple[bytes, pb.Frame]:
    frame = pb.Frame(publish=pb.Publish(seq=7, envelope=pb.Envelope(id="ok", topic="t")))
    header = frame.SerializeToString()
    return PREFIX.pack(len(header), 2) + header + b"hi", frame


def _feed_all(decoder: FrameDecoder, messages: list[bytes]) -> list:
    out = []
    for message in messages:
        out.extend(decoder.feed(message))
    return out


@budget
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_any_bytes_decode_or_raise_protocol_error_and_the_decoder_recovers(messages: list[bytes]) -> None:
    decoder = FrameDecoder(max_payload=1 << 16)
    for message in messages:
        try:
            for frame, payload in decoder.feed(message):
                assert isinstance(frame, pb.Frame)
                assert isinstance(payload, Oversize) or len(payload) <= 1 << 16
        except ProtocolError as exc:
            assert str(exc)  # a reason, always
            good, frame = _good_message()
            assert decoder.feed(good) == [(frame, b"hi")]  # ready for the next message


@budget
@given(_wire_frames, st.integers(min_value=512, max_value=9000))
def test_whatever_is_encoded_decodes_to_the_same_frames(frames: list, max_frame: int) -> None:
    try:
        messages = list(iter_batches(frames, max_frame))
    except ProtocolError:
        return  # a header larger than the frame size: refused at encoding, with a reason
    assert all(len(m) <= max_frame for m in messages)
    decoded = _feed_all(FrameDecoder(), messages)
    assert [(f, bytes(p)) for f, p in decoded] == [(f, bytes(p)) for f, p in frames]


@budget
@given(_wire_frames, st.integers(min_value=512, max_value=4096), st.data())
def test_corrupted_encodings_fail_cleanly(frames: list, max_frame: int, data: st.DataObject) -> None:
    try:
        messages = list(iter_batches(frames, max_frame))
    except ProtocolError:
        return
    index = data.draw(st.integers(0, len(messages) - 1))
    message = bytearray(messages[index])
    action = data.draw(st.sampled_from(["flip", "truncate", "drop", "duplicate"]))
    if action == "flip":
        pos = data.draw(st.integers(0, len(message) - 1))
        message[pos] ^= data.draw(st.integers(1, 255))
        messages[index] = bytes(message)
    elif action == "truncate":
        messages[index] = bytes(message[:data.draw(st.integers(0, len(message) - 1))])
    elif action == "drop":  # a chunk sequence gap
        del messages[index]
    else:
        messages.insert(index, messages[index])
    cap = 2048
    decoder = FrameDecoder(max_payload=cap)
    for message in messages:
        try:
            for frame, payload in decoder.feed(message):
                assert isinstance(payload, Oversize) or len(payload) <= max(cap, max_frame)
        except ProtocolError as exc:
            assert str(exc)
    good, frame = _good_message()
    decoder.reset()  # what the hub does when a stream's partial frame is abandoned
    assert decoder.feed(good) == [(frame, b"hi")]


# -- frames from a client the hub has not admitted --------------------------------------------


class _Aborted(Exception):
    pass


class _FakeContext:
    """What the hub's servicer uses of a grpc.aio context: the client's messages in, then the
    client leaves; the hub's messages and the call's status out."""

    def __init__(self, messages: list[bytes]) -> None:
        self._messages = list(messages)
        self.written: list[bytes] = []
        self.status: object = None

    def peer(self) -> str:
        return "ipv4:192.0.2.7:40000"

    async def read(self) -> object:
        import grpc.aio

        return self._messages.pop(0) if self._messages else grpc.aio.EOF

    async def write(self, message: bytes) -> None:
        self.written.append(message)

    async def abort(self, code: object, details: str) -> None:
        self.status = code
        raise _Aborted(details)


def _chunk_header(kind: str, declared: int) -> bytes:
    frame = {"publish": pb.Frame(publish=pb.Publish(seq=1, envelope=pb.Envelope(id="x", topic="t"))),
             "hello": pb.Frame(hello=pb.Hello(agent="sneaky")),
             "subscribe": pb.Frame(subscribe=pb.Subscribe(request_id=1, filters=["#"])),
             "empty": pb.Frame()}[kind]
    frame.payload_size = declared
    return frame.SerializeToString()


# A first chunk of a frame declaring up to 1 TiB, a frame of any kind, or any bytes.
_prehello_message = st.one_of(
    st.builds(lambda kind, declared, piece: PREFIX.pack(len(_chunk_header(kind, declared)), len(piece))
              + _chunk_header(kind, declared) + piece,
              st.sampled_from(["publish", "hello", "subscribe", "empty"]),
              st.integers(1, 2**40), st.binary(max_size=64)),
    st.builds(lambda frame, payload: PREFIX.pack(len(frame.SerializeToString()), len(payload))
              + frame.SerializeToString() + payload, _frame, st.binary(max_size=64)),
    st.binary(min_size=1, max_size=200),
)


@settings(budget, max_examples=max(1, EXAMPLES // 2))
@given(st.lists(_prehello_message, min_size=1, max_size=4))
def test_before_hello_nothing_is_buffered_and_every_refusal_has_a_status(messages: list[bytes]) -> None:
    import asyncio
    import tracemalloc

    import grpc
    from latentwire.hub import Hub
    from latentwire.hub.server import BusServicer

    async def run() -> tuple[_FakeContext, Hub]:
        context, hub = _FakeContext(messages), Hub()
        try:
            await asyncio.wait_for(BusServicer(hub).connect(None, context), 5)
        except _Aborted:
            pass
        return context, hub

    tracemalloc.start()
    try:
        context, hub = asyncio.run(run())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak} bytes allocated for a client without an accepted hello"
    if hub.stats.connections:
        return  # hypothesis wrote a valid hello: admitted, as any client would be
    answers = [f for m in context.written for f, _ in FrameDecoder().feed(m)]
    assert answers, "the hub ended the call without a word"
    assert answers[0].HasField("error") and answers[0].error.reason
    assert context.status not in (None, grpc.StatusCode.OK)
