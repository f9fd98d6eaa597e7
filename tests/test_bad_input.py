"""Bad input gets a clear error, and the hub keeps serving everyone else.

Most checks run twice: through the SDK (which refuses before sending) and through a raw
connection that skips the SDK's checks, to show the hub refuses the same thing itself.
"""

from __future__ import annotations

import asyncio
import re

import grpc
import numpy as np
import pytest

import latentwire
from latentwire._grpc_stream import METHOD
from latentwire._proto import bus_pb2 as pb
from latentwire._wire import FrameDecoder, encode_batch

from .conftest import HubEnv

pytestmark = pytest.mark.timeout(60)


class RawClient:
    """A client that speaks frames directly, bypassing every SDK check."""

    def __init__(self, env: HubEnv, agent: str) -> None:
        self.env, self.agent = env, agent
        self.seq = 0

    async def __aenter__(self) -> RawClient:
        transport = latentwire.connect(self.env.url, **self.env.options)._transport
        self.transport = transport
        self.conn = await transport.connect(5)
        await self.conn.send([(pb.Frame(hello=pb.Hello(agent=self.agent, receive_window=16)), b"")])
        frames = await asyncio.wait_for(self.conn.receive(), 5)
        assert frames[0][0].HasField("welcome")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.aclose()
        await self.transport.aclose()

    async def publish(self, envelope: pb.Envelope, payload: bytes) -> pb.Ack:
        self.seq += 1
        await self.conn.send([(pb.Frame(publish=pb.Publish(seq=self.seq, envelope=envelope)), payload)])
        while True:
            for frame, _ in await asyncio.wait_for(self.conn.receive(), 5):
                if frame.HasField("publish_ack"):
                    return frame.publish_ack


def tensor_envelope(dtype: str, shape: list[int], topic: str = "t") -> pb.Envelope:
    env = pb.Envelope(id="m1", topic=topic)
    env.tensor.dtype = dtype
    env.tensor.shape.extend(shape)
    return env


async def bystander_works(env: HubEnv) -> None:
    """Someone else on the same hub still gets their messages through."""
    async with env.connect("by-p") as p, env.connect("by-c") as c:
        sub = await c.subscribe("bystander")
        await p.publish("bystander", latent=np.ones(4, np.float32))
        assert (await sub.receive(timeout=5)).latent.shape == (4,)


@pytest.mark.parametrize("case, code, match", [
    ("short", pb.INVALID_TENSOR, "needs 16 bytes, got 12"),
    ("long", pb.INVALID_TENSOR, "needs 16 bytes, got 20"),
    ("dtype", pb.INVALID_TENSOR, "unknown dtype 'complex64'"),
    ("negative", pb.INVALID_TENSOR, "negative dimension"),
    ("empty-topic", pb.INVALID_TOPIC, "must not be empty"),
    ("wild-topic", pb.INVALID_TOPIC, "only allowed in subscriptions"),
    ("no-body", pb.INVALID_ARGUMENT, "no body"),
])
async def test_hub_refuses_bad_publish(env: HubEnv, case: str, code: int, match: str) -> None:
    envelope, payload = {
        "short": (tensor_envelope("float32", [2, 2]), b"\0" * 12),
        "long": (tensor_envelope("float32", [2, 2]), b"\0" * 20),
        "dtype": (tensor_envelope("complex64", [2]), b"\0" * 16),
        "negative": (tensor_envelope("float32", [-1, 4]), b""),
        "empty-topic": (tensor_envelope("uint8", [1], topic=""), b"\0"),
        "wild-topic": (tensor_envelope("uint8", [1], topic="a/+"), b"\0"),
        "no-body": (pb.Envelope(id="m1", topic="t"), b""),
    }[case]
    async with RawClient(env, "raw") as raw:
        ack = await raw.publish(envelope, payload)
        assert not ack.seqs and len(ack.rejections) == 1
        assert ack.rejections[0].code == code and match in ack.rejections[0].reason
        good = tensor_envelope("float32", [2, 2])
        assert list((await raw.publish(good, b"\0" * 16)).seqs) == [raw.seq]  # same stream goes on
    await bystander_works(env)


async def test_sdk_refuses_bad_tensors_before_sending(env: HubEnv) -> None:
    async with env.connect("p") as p:
        with pytest.raises(latentwire.InvalidTensor, match="unsupported dtype complex64; supported: bool"):
            await p.publish("t", latent=np.zeros(2, np.complex64))
        with pytest.raises(latentwire.InvalidTensor, match="numpy.ndarray or torch.Tensor"):
            await p.publish("t", latent=[1.0, 2.0])
        with pytest.raises(latentwire.InvalidTensor, match="needs 16 bytes, got 12"):
            latentwire.Latent.frombuffer(b"\0" * 12, "float32", (2, 2))
        with pytest.raises(latentwire.InvalidMessage, match="exactly one body"):
            await p.publish("t", "text", latent=np.zeros(2, np.float32))
        await p.publish("t", latent=np.zeros(2, np.float32))  # the bus goes on


@pytest.mark.parametrize("topic, reason", [
    ("", "must not be empty"),
    ("a//b", "empty level"),
    ("a/+", "only allowed in subscriptions"),
    ("a/#", "only allowed in subscriptions"),
    ("$sys/x", "reserved"),
    ("x" * 2000, "longer than 1024"),
])
async def test_invalid_publish_topics(env: HubEnv, topic: str, reason: str) -> None:
    async with env.connect("p") as p:
        with pytest.raises(latentwire.InvalidTopic, match=reason):
            await p.publish(topic, "x")


@pytest.mark.parametrize("pattern, reason", [
    ("a/#/b", "'#' must be a whole level and the last one"),
    ("a/b+", "'+' must be a whole level"),
    ("", "must not be empty"),
])
async def test_invalid_subscription_filters(env: HubEnv, pattern: str, reason: str) -> None:
    async with env.connect("c") as c:
        with pytest.raises(latentwire.InvalidTopic, match=re.escape(reason)):
            c.subscribe(pattern)
    async with RawClient(env, "raw") as raw:  # the hub checks filters too
        await raw.conn.send([(pb.Frame(subscribe=pb.Subscribe(request_id=7, filters=[pattern])), b"")])
        frames = await asyncio.wait_for(raw.conn.receive(), 5)
        ack = frames[0][0].subscribe_ack
        assert (ack.request_id, ack.code) == (7, pb.INVALID_TOPIC) and reason in ack.reason
    await bystander_works(env)


async def test_oversize_message_is_refused_not_dropped(make_env) -> None:
    env = await make_env(max_message_bytes=1 << 20)
    async with env.connect("p") as p, env.connect("c") as c:
        sub = await c.subscribe("big")
        with pytest.raises(latentwire.MessageTooLarge, match="max_message_bytes=1048576") as info:
            await p.publish("big", latent=np.zeros(1 << 20, np.uint8))
        assert info.value.limit == 1 << 20 and info.value.size > 1 << 20
        await p.publish("big", latent=np.zeros(1000, np.uint8))  # same connection still works
        assert (await sub.receive(timeout=5)).latent.shape == (1000,)
    async with RawClient(env, "raw") as raw:  # a client that ignores the cap is refused by the hub
        # 5 MiB: above the gRPC frame size too, so the hub skips the chunks without buffering them
        ack = await raw.publish(tensor_envelope("uint8", [5 << 20]), b"\0" * (5 << 20))
        assert ack.rejections[0].code == pb.PAYLOAD_TOO_LARGE
        assert "exceeds max_message_bytes=1048576" in ack.rejections[0].reason
        ok = await raw.publish(tensor_envelope("uint8", [8]), b"\0" * 8)
        assert list(ok.seqs) == [raw.seq]
    await bystander_works(env)


async def test_malformed_frames_get_an_error_and_the_stream_goes_on(env: HubEnv) -> None:
    if env.kind == "inproc":
        pytest.skip("in-process frames are objects; there are no bytes to malform")
    creds = None
    if env.kind == "grpcs":
        creds = grpc.ssl_channel_credentials(env.options["tls_ca"].read_bytes())
    target = env.url.split("://", 1)[1]
    channel = (grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target))
    try:
        call = channel.stream_stream(METHOD)()
        decoder = FrameDecoder(1 << 20)
        await call.write(encode_batch([(pb.Frame(hello=pb.Hello(agent="garbage", receive_window=4)), b"")],
                                      1 << 20)[0])
        assert decoder.feed(await asyncio.wait_for(call.read(), 5))[0][0].HasField("welcome")
        for junk in [b"\x01\x02\x03", b"\xff\xff\xff\x7f\x00\x00\x00\x00" + b"x" * 10,
                     b"\x05\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff"]:
            await call.write(junk)
            frame = decoder.feed(await asyncio.wait_for(call.read(), 5))[0][0]
            assert frame.error.code == pb.MALFORMED and frame.error.reason
        good = pb.Frame(publish=pb.Publish(seq=1, envelope=tensor_envelope("uint8", [2])))
        await call.write(encode_batch([(good, b"ok")], 1 << 20)[0])
        frame = decoder.feed(await asyncio.wait_for(call.read(), 5))[0][0]
        assert list(frame.publish_ack.seqs) == [1]
        call.cancel()
    finally:
        await channel.close()
    await bystander_works(env)


async def test_bad_agent_id_is_refused(env: HubEnv) -> None:
    with pytest.raises(latentwire.InvalidMessage, match="invalid agent id 'no spaces please'"):
        async with env.connect("no spaces please"):
            pass
    await bystander_works(env)


async def test_unknown_url_scheme_and_unreachable_hub() -> None:
    with pytest.raises(latentwire.ConfigError, match="unsupported URL scheme 'http'"):
        latentwire.connect("http://localhost:1")
    with pytest.raises(latentwire.ConfigError, match="needs a host and port"):
        latentwire.connect("grpc://localhost")
    with pytest.raises(latentwire.ConnectError, match="no hub reachable at 127.0.0.1:9 within 0.3 s"):
        async with latentwire.connect("grpc://127.0.0.1:9", connect_timeout=0.3):
            pass


async def test_blocked_publisher_is_woken_when_the_bus_fails(make_env) -> None:
    env = await make_env(session_max_messages=1, publish_window=2)
    if env.server is None:
        pytest.skip("needs a hub that can be stopped out from under the client")
    async with env.connect("c", receive_window=1) as c:
        await c.subscribe("t")
        async with env.connect("p", reconnect_timeout=1) as p:
            blocked = asyncio.gather(*[p.publish("t", str(i)) for i in range(5)], return_exceptions=True)
            await asyncio.sleep(0.3)
            # The first fits the consumer's session; 2 wait unacked in the hub; 2 wait for credit.
            assert not blocked.done()
            await env.server.stop(grace=0.1)
            results = await asyncio.wait_for(blocked, 10)  # every one of them ends, none hangs
            assert isinstance(results[0], str)
            assert all(isinstance(r, latentwire.ConnectError) for r in results[1:]), results
            assert "could not reconnect" in str(results[-1])
            assert p.state is latentwire.BusState.CLOSED


async def test_message_above_receive_cap_is_dropped_not_fatal(make_env) -> None:
    env = await make_env()
    if env.server is None:
        pytest.skip("the receive cap belongs to the gRPC transport")
    async with env.connect("p") as p, env.connect("c", max_receive_bytes=6 << 20) as c:
        sub = await c.subscribe("t")
        await p.publish("t", latent=np.zeros(8 << 20, np.uint8))  # chunked, above c's cap
        await p.publish("t", "small")
        assert (await sub.receive(timeout=10)).text == "small"
        assert c.state is latentwire.BusState.OPEN


def test_cli_errors_are_one_line_with_the_usage_status(tmp_path) -> None:
    """A bad setting reaching a command ends in one line and exit 2, a failed run in exit 1;
    never a traceback."""
    import subprocess
    import sys

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "latentwire.cli", *argv], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)

    bad_task = run("demo", "--task", "nosuch")
    assert bad_task.returncode == 2 and "invalid choice: 'nosuch'" in bad_task.stderr
    assert "Traceback" not in bad_task.stderr
    for name in ("bus", "mas", "mopd", "rcl", "crash", "journal"):
        shown = run("bench", name, "--help")
        assert shown.returncode == 0 and "--json FILE" in shown.stdout and "--quick" in shown.stdout, name
