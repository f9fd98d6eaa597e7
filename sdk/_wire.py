"""Frames on a byte stream: how (Frame header, payload) pairs become transport messages.

One wire frame is ``u32 header_len | u32 payload_len | header | payload`` (little-endian).
The header is a serialised `Frame`; the payload is raw bytes (a tensor buffer, UTF-8 text),
never wrapped in protobuf, so a relay parses only the small header and forwards the payload.

* Batching: several small frames share one transport message (`encode_batch`), which cuts
  the per-message cost of gRPC for small messages. Only frames that are already waiting are
  batched; nothing is delayed to fill a batch.
* Chunking: a frame whose header and payload exceed ``max_frame_bytes`` is split. Its first
  wire frame carries the header with ``payload_size`` set to the full payload length and the
  first piece; continuation frames have ``header_len = 0`` and carry the following pieces.
  `FrameDecoder` reassembles them and refuses a payload above its cap without dropping the
  stream: the frame is returned with an `Oversize` marker as soon as its header arrives, so the
  caller can refuse it at once, and the chunks that follow are skipped. A reassembly buffer
  grows with the bytes received, never to the size a header declares.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from ._proto import bus_pb2 as pb
from .errors import ProtocolError

PREFIX = struct.Struct("<II")
# Payloads smaller than this are copied out of a received batch, so a small message held in
# a queue does not keep a whole multi-megabyte batch buffer alive.
COPY_BELOW = 64 * 1024

Payload = bytes | bytearray | memoryview
WireFrame = tuple[pb.Frame, Payload]


@dataclass(frozen=True, slots=True)
class Oversize:
    """Marks a decoded frame whose payload was refused for exceeding the cap (not buffered)."""

    size: int
    limit: int

    def __len__(self) -> int:
        return self.size


def _pieces(frame: pb.Frame, payload: Payload, max_frame: int) -> Iterator[list[bytes | memoryview]]:
    """Yield the wire frames of one logical frame, each as a list of byte pieces."""
    size = len(payload)
    header = frame.SerializeToString()
    if PREFIX.size + len(header) + size <= max_frame:
        yield [PREFIX.pack(len(header), size), header, payload]
        return
    chunked = pb.Frame()
    chunked.CopyFrom(frame)
    chunked.payload_size = size
    header = chunked.SerializeToString()
    room = max_frame - PREFIX.size - len(header)
    if room <= 0:
        raise ProtocolError(f"frame header of {len(header)} bytes exceeds max_frame_bytes={max_frame}")
    view = memoryview(payload).cast("B") if not isinstance(payload, bytes) else memoryview(payload)
    yield [PREFIX.pack(len(header), room), header, view[:room]]
    step = max_frame - PREFIX.size
    for start in range(room, size, step):
        piece = view[start:start + step]
        yield [PREFIX.pack(0, len(piece)), piece]


def iter_batches(frames: Iterable[WireFrame], max_frame: int) -> Iterator[bytes]:
    """Pack logical frames into transport messages of at most ``max_frame`` bytes each.

    A generator, so a sender holds one packed message at a time, not a copy of everything it
    is about to send while the transport makes it wait.
    """
    current: list[bytes | memoryview] = []
    current_size = 0
    for frame, payload in frames:
        for pieces in _pieces(frame, payload, max_frame):
            n = sum(len(p) for p in pieces)
            if current and current_size + n > max_frame:
                yield b"".join(current)
                current, current_size = [], 0
            current.extend(pieces)
            current_size += n
    if current:
        yield b"".join(current)


def encode_batch(frames: Iterable[WireFrame], max_frame: int) -> list[bytes]:
    """`iter_batches` as a list."""
    return list(iter_batches(frames, max_frame))


class FrameDecoder:
    """Turns received transport messages back into (Frame, payload) pairs, per stream.

    ``max_payload`` (None: no cap) caps one reassembled payload; a larger one is returned as
    `Oversize` when its first chunk arrives and its chunks are skipped. The cap may change
    between messages (the hub raises it once a client's hello is accepted). A malformed
    message raises `ProtocolError`; the decoder then drops any partial frame and is ready for
    the next message, so one bad message does not end the stream.
    """

    def __init__(self, max_payload: int | None = None) -> None:
        self.max_payload = max_payload
        self._frame: pb.Frame | None = None  # header of the frame being reassembled
        self._buffer: bytearray | None = None  # None while skipping an oversize payload
        self._total = 0  # the payload size its header declared
        self._filled = 0

    def feed(self, message: bytes) -> list[tuple[pb.Frame, Payload | Oversize]]:
        """Decode one transport message; return the frames it completes."""
        out: list[tuple[pb.Frame, Payload | Oversize]] = []
        view = memoryview(message)
        pos, end = 0, len(message)
        try:
            while pos < end:
                if end - pos < PREFIX.size:
                    raise ProtocolError(f"truncated frame prefix: {end - pos} bytes left of {PREFIX.size}")
                header_len, payload_len = PREFIX.unpack_from(view, pos)
                pos += PREFIX.size
                if header_len + payload_len > end - pos:
                    raise ProtocolError(
                        f"frame declares {header_len}+{payload_len} bytes but the message has "
                        f"{end - pos} left"
                    )
                if header_len == 0:
                    self._continue(view[pos:pos + payload_len], out)
                    pos += payload_len
                    continue
                if self._frame is not None:
                    raise ProtocolError("new frame started before the chunked payload was complete")
                try:
                    frame = pb.Frame.FromString(view[pos:pos + header_len])
                except DecodeError as exc:
                    raise ProtocolError(f"frame header is not a valid Frame: {exc}") from exc
                pos += header_len
                piece = view[pos:pos + payload_len]
                pos += payload_len
                if frame.payload_size:
                    self._start(frame, piece, out)
                else:
                    out.append((frame, bytes(piece) if payload_len < COPY_BELOW else piece))
        except ProtocolError:
            self.reset()
            raise
        return out

    def _start(self, frame: pb.Frame, piece: memoryview, out: list) -> None:
        total = frame.payload_size
        if len(piece) > total:
            raise ProtocolError(f"first chunk of {len(piece)} bytes exceeds payload_size={total}")
        frame.payload_size = 0
        self._frame, self._total, self._filled = frame, total, 0
        if self.max_payload is not None and total > self.max_payload:
            # Refused from the header alone: nothing of it is stored, and the caller can
            # answer before the (possibly never sent) rest arrives.
            self._buffer = None
            out.append((frame, Oversize(total, self.max_payload)))
        else:
            # Grown with the bytes that arrive: a header may declare any size, and only bytes
            # a peer really sent may cost memory.
            self._buffer = bytearray()
        self._continue(piece, out)

    def _continue(self, piece: memoryview, out: list) -> None:
        if self._frame is None:
            raise ProtocolError("continuation frame without a chunked frame in progress")
        total = self._total
        if self._filled + len(piece) > total:
            raise ProtocolError(f"chunks exceed payload_size={total}")
        if self._buffer is not None:
            self._buffer += piece
        self._filled += len(piece)
        if self._filled == total:
            if self._buffer is not None:
                out.append((self._frame, self._buffer))
            self.reset()

    def reset(self) -> None:
        """Forget any partially reassembled frame."""
        self._frame = None
        self._buffer = None
        self._total = 0
        self._filled = 0
