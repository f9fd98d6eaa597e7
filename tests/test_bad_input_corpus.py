"""The bad-input corpus: every case gets a clear error naming what is wrong, and nothing the
hub accepted before it is lost.

Cases come in families, each a parametrised test:

* wire bytes (grpc only: in-process frames are objects): malformed protobuf, truncated
  prefixes and chunks, chunk sequence gaps and overruns;
* publishes that skip the SDK's checks (raw frames): wrong dtype/shape/length, huge shape
  products, inline bodies, bad ids, invalid topics and wildcards, oversize headers;
* hellos and subscriptions: bad agent ids, bad filters, a first frame that is not hello;
* auth files and configuration values: refused at start with the field named.

For the bus cases a message published just before the bad input must still reach its
subscriber, and the same stream must accept the next good message.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import latentwire
import pytest
from latentwire._grpc_stream import METHOD
from latentwire._proto import bus_pb2 as pb
from latentwire._wire import PREFIX, FrameDecoder, encode_batch
from latentwire.hub import Hub, HubConfig
from latentwire.hub.auth import load_auth_file
from latentwire.hub.inproc import embedded_hub
from latentwire.hub.server import serve
from latentwire.hub.tokens import hash_token

from .conftest import HubEnv
from .test_bad_input import RawClient, tensor_envelope

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["inproc", "grpc"])
async def hub_env(request: pytest.FixtureRequest):
    """A plain hub, in process and over gRPC (grpcs:// and mqtt:// run the shared suites)."""
    if request.param == "inproc":
        name = f"corpus-{uuid.uuid4().hex[:8]}"
        hub = embedded_hub(name)
        yield HubEnv("inproc", f"inproc://{name}", hub)
        await hub.aclose()
    else:
        server = await serve(Hub(), port=0)
        yield HubEnv("grpc", server.url, server.hub, server=server)
        await server.stop(grace=0.5)


def text_envelope(topic: str = "corpus/t", **fields) -> pb.Envelope:
    env = pb.Envelope(**{"id": uuid.uuid4().hex, "topic": topic, **fields})
    env.text = ""
    return env


# -- publishes that skip the SDK --------------------------------------------------------------

def _tensor(dtype: str, shape: list[int], **tensor_fields) -> pb.Envelope:
    env = tensor_envelope(dtype, shape, topic="corpus/t")
    env.id = uuid.uuid4().hex
    for key, value in tensor_fields.items():
        setattr(env.tensor, key, value)
    return env


def _control_with_payload() -> pb.Envelope:
    env = pb.Envelope(id="c1", topic="corpus/t")
    env.control.kind = "stop"
    return env


def _inline_text() -> pb.Envelope:
    env = pb.Envelope(id="x1", topic="corpus/t")
    env.text = "inline"
    return env


def _headers(n: int) -> pb.Envelope:
    env = text_envelope()
    env.headers["big"] = "h" * n
    return env


PUBLISH_CASES = {
    # name: (envelope, payload, wire code, reason excerpt)
    "tensor-short": (_tensor("float32", [2, 2]), b"\0" * 12, pb.INVALID_TENSOR, "needs 16 bytes, got 12"),
    "tensor-long": (_tensor("float32", [2, 2]), b"\0" * 20, pb.INVALID_TENSOR, "needs 16 bytes, got 20"),
    "tensor-empty-payload": (_tensor("int64", [3]), b"", pb.INVALID_TENSOR, "needs 24 bytes, got 0"),
    "dtype-unknown": (_tensor("complex64", [2]), b"\0" * 16, pb.INVALID_TENSOR, "unknown dtype 'complex64'"),
    "dtype-empty": (_tensor("", [2]), b"\0" * 2, pb.INVALID_TENSOR, "unknown dtype ''"),
    "dtype-case": (_tensor("Float32", [1]), b"\0" * 4, pb.INVALID_TENSOR, "unknown dtype 'Float32'"),
    "shape-negative": (_tensor("float32", [-1, 4]), b"", pb.INVALID_TENSOR, "negative dimension"),
    "shape-too-many-dims": (_tensor("uint8", [1] * 64), b"\0", pb.INVALID_TENSOR, "dimensions; at most"),
    "shape-huge-product": (_tensor("float32", [2**40, 2**40]), b"\0" * 16, pb.INVALID_TENSOR,
                           f"needs {2**80 * 4} bytes, got 16"),
    "shape-huge-zero-payload": (_tensor("uint8", [2**62]), b"", pb.INVALID_TENSOR, "got 0"),
    "shape-wrong-for-payload": (_tensor("float32", [3]), b"\0" * 16, pb.INVALID_TENSOR,
                                "needs 12 bytes, got 16"),
    "tensor-inline-data": (_tensor("uint8", [2], data=b"ab"), b"ab", pb.INVALID_TENSOR,
                           "must travel as the frame payload"),
    "text-inline": (_inline_text(), b"", pb.INVALID_ARGUMENT, "text must travel as the frame payload"),
    "control-with-payload": (_control_with_payload(), b"x", pb.INVALID_ARGUMENT, "carries no payload"),
    "no-body": (pb.Envelope(id="n1", topic="corpus/t"), b"", pb.INVALID_ARGUMENT, "no body"),
    "id-missing": (text_envelope(id=""), b"x", pb.INVALID_ARGUMENT, "message id must be 1..128"),
    "id-too-long": (text_envelope(id="i" * 129), b"x", pb.INVALID_ARGUMENT, "got 129"),
    "topic-empty": (text_envelope(topic=""), b"x", pb.INVALID_TOPIC, "must not be empty"),
    "topic-double-slash": (text_envelope(topic="a//b"), b"x", pb.INVALID_TOPIC, "empty level"),
    "topic-leading-slash": (text_envelope(topic="/a"), b"x", pb.INVALID_TOPIC, "empty level"),
    "topic-trailing-slash": (text_envelope(topic="a/"), b"x", pb.INVALID_TOPIC, "empty level"),
    "topic-plus": (text_envelope(topic="a/+"), b"x", pb.INVALID_TOPIC, "only allowed in subscriptions"),
    "topic-hash": (text_envelope(topic="a/#"), b"x", pb.INVALID_TOPIC, "only allowed in subscriptions"),
    "topic-embedded-plus": (text_envelope(topic="a/b+c"), b"x", pb.INVALID_TOPIC,
                            "only allowed in subscriptions"),
    "topic-reserved": (text_envelope(topic="$SYS/x"), b"x", pb.INVALID_TOPIC, "reserved"),
    "topic-nul": (text_envelope(topic="a\x00b"), b"x", pb.INVALID_TOPIC, "NUL"),
    "topic-too-long": (text_envelope(topic="t" * 1025), b"x", pb.INVALID_TOPIC, "longer than 1024"),
    "direct-bad-topic": (text_envelope(topic="a/#", recipient="somebody"), b"x", pb.INVALID_TOPIC,
                         "only allowed in subscriptions"),
    "headers-oversize": (_headers(70_000), b"x", pb.INVALID_ARGUMENT,
                         "headers take 70003 bytes; at most 65536"),
    "direct-unknown-agent": (text_envelope(recipient="nobody-here"), b"x", pb.NOT_FOUND,
                             "unknown agent 'nobody-here'"),
}


async def delivered_first(env: HubEnv, raw: RawClient, sub: latentwire.Subscription, tag: str) -> None:
    """Publish a good message before the bad input: it must reach the subscriber."""
    ack = await raw.publish(text_envelope(), tag.encode())
    assert list(ack.seqs) == [raw.seq] and not ack.rejections


@pytest.mark.parametrize("case", sorted(PUBLISH_CASES))
async def test_bad_publish(hub_env: HubEnv, case: str) -> None:
    envelope, payload, code, reason = PUBLISH_CASES[case]
    async with hub_env.connect("watcher") as watcher, RawClient(hub_env, "raw") as raw:
        sub = await watcher.subscribe("corpus/#")
        await delivered_first(hub_env, raw, sub, "before")
        ack = await raw.publish(envelope, payload)
        assert not ack.seqs and len(ack.rejections) == 1
        rejection = ack.rejections[0]
        assert pb.ErrorCode.Name(rejection.code) == pb.ErrorCode.Name(code), rejection.reason
        assert reason in rejection.reason
        assert list((await raw.publish(text_envelope(), b"after")).seqs) == [raw.seq]  # the stream goes on
        assert [(await sub.receive(timeout=5)).text for _ in range(2)] == ["before", "after"]


# -- hellos and subscriptions -------------------------------------------------------------------

HELLO_CASES = {
    "agent-empty": (pb.Hello(agent=""), pb.INVALID_ARGUMENT, "invalid agent id ''"),
    "agent-space": (pb.Hello(agent="a b"), pb.INVALID_ARGUMENT, "invalid agent id 'a b'"),
    "agent-leading-dash": (pb.Hello(agent="-x"), pb.INVALID_ARGUMENT, "starting with a letter or digit"),
    "agent-too-long": (pb.Hello(agent="a" * 129), pb.INVALID_ARGUMENT, "use 1-128 of"),
    "agent-slash": (pb.Hello(agent="a/b"), pb.INVALID_ARGUMENT, "invalid agent id 'a/b'"),
    "hello-bad-filter": (pb.Hello(agent="ok", subscriptions=["a/#/b"]), pb.INVALID_TOPIC,
                         "'#' must be a whole level and the last one"),
    "hello-empty-filter": (pb.Hello(agent="ok", subscriptions=[""]), pb.INVALID_TOPIC, "must not be empty"),
}


async def _first_frame(env: HubEnv, frame: pb.Frame) -> pb.Frame:
    transport = latentwire.connect(env.url, **env.options)._transport
    conn = await transport.connect(5)
    try:
        await conn.send([(frame, b"")])
        return (await asyncio.wait_for(conn.receive(), 5))[0][0]
    finally:
        await conn.aclose()
        await transport.aclose()


@pytest.mark.parametrize("case", sorted(HELLO_CASES))
async def test_bad_hello(hub_env: HubEnv, case: str) -> None:
    hello, code, reason = HELLO_CASES[case]
    async with hub_env.connect("producer") as producer, hub_env.connect("watcher") as watcher:
        sub = await watcher.subscribe("corpus/#")
        await producer.publish("corpus/t", "before")
        answer = await _first_frame(hub_env, pb.Frame(hello=hello))
        assert answer.error.code == code and reason in answer.error.reason, answer
        await producer.publish("corpus/t", "after")
        assert [(await sub.receive(timeout=5)).text for _ in range(2)] == ["before", "after"]


async def test_first_frame_must_be_hello(hub_env: HubEnv) -> None:
    answer = await _first_frame(hub_env, pb.Frame(bye=pb.Bye()))
    assert answer.error.code == pb.MALFORMED and "first frame must be hello, got bye" in answer.error.reason


@pytest.mark.parametrize("flt, reason", [
    ("a/#/b", "'#' must be a whole level and the last one"),
    ("a/b#", "'#' must be a whole level"),
    ("a/b+", "'+' must be a whole level"),
    ("", "must not be empty"),
    ("a//b", "empty level"),
    ("$SYS/#", "reserved"),
])
async def test_bad_subscription_filter(hub_env: HubEnv, flt: str, reason: str) -> None:
    async with hub_env.connect("watcher") as watcher, RawClient(hub_env, "raw") as raw:
        sub = await watcher.subscribe("corpus/#")
        await delivered_first(hub_env, raw, sub, "before")
        await raw.conn.send([(pb.Frame(subscribe=pb.Subscribe(request_id=9, filters=["ok/+", flt])), b"")])
        ack = (await asyncio.wait_for(raw.conn.receive(), 5))[0][0].subscribe_ack
        assert (ack.request_id, ack.code) == (9, pb.INVALID_TOPIC) and reason in ack.reason
        assert (await sub.receive(timeout=5)).text == "before"


# -- wire bytes ------------------------------------------------------------------------------

def _frame_bytes(frame: pb.Frame, payload: bytes = b"") -> bytes:
    header = frame.SerializeToString()
    return PREFIX.pack(len(header), len(payload)) + header + payload


def _chunk_start(total: int, first: bytes) -> bytes:
    frame = pb.Frame(payload_size=total, publish=pb.Publish(seq=99, envelope=_tensor("uint8", [total])))
    return _frame_bytes(frame, first)


WIRE_CASES = {
    "junk-3-bytes": (b"\x01\x02\x03", "truncated frame prefix: 3 bytes left of 8"),
    "prefix-only-header-len": (b"\x05\x00\x00\x00", "truncated frame prefix"),
    "header-len-beyond-message": (PREFIX.pack(1000, 0) + b"xx",
                                  "declares 1000+0 bytes but the message has 2 left"),
    "payload-len-beyond-message": (PREFIX.pack(2, 5000) + b"\x08\x01", "declares 2+5000 bytes"),
    "huge-lengths": (b"\xff\xff\xff\x7f\x00\x00\x00\x00" + b"x" * 10, "declares 2147483647+0 bytes"),
    "not-protobuf": (PREFIX.pack(5, 0) + b"\xff\xff\xff\xff\xff", "frame header is not a valid Frame"),
    "truncated-varint": (PREFIX.pack(2, 0) + b"\x08\x80", "frame header is not a valid Frame"),
    "continuation-without-start": (PREFIX.pack(0, 4) + b"abcd", "continuation frame without a chunked frame"),
    "first-chunk-too-big": (_chunk_start(4, b"12345678"), "first chunk of 8 bytes exceeds payload_size=4"),
    "chunks-overrun": (_chunk_start(6, b"1234") + PREFIX.pack(0, 4) + b"5678",
                       "chunks exceed payload_size=6"),
    "chunk-gap-new-frame": (_chunk_start(8, b"1234") + _frame_bytes(pb.Frame(bye=pb.Bye())),
                            "new frame started before the chunked payload was complete"),
    "truncated-chunk": (_chunk_start(8, b"1234") + PREFIX.pack(0, 4) + b"56", "declares 0+4 bytes"),
}


@pytest.mark.parametrize("case", sorted(WIRE_CASES))
async def test_malformed_wire_bytes(case: str) -> None:
    junk, reason = WIRE_CASES[case]
    server = await serve(Hub(), port=0)
    target = server.url.split("://", 1)[1]
    try:
        async with grpc.aio.insecure_channel(target) as channel, \
                latentwire.connect(server.url, agent="watcher") as watcher:
            sub = await watcher.subscribe("corpus/#")
            call = channel.stream_stream(METHOD)()
            decoder = FrameDecoder(1 << 20)

            async def next_frame() -> pb.Frame:
                return decoder.feed(await asyncio.wait_for(call.read(), 5))[0][0]

            await call.write(_frame_bytes(pb.Frame(hello=pb.Hello(agent="raw", receive_window=4))))
            assert (await next_frame()).HasField("welcome")
            good = pb.Frame(publish=pb.Publish(seq=1, envelope=text_envelope()))
            await call.write(encode_batch([(good, b"before")], 1 << 20)[0])
            assert list((await next_frame()).publish_ack.seqs) == [1]
            await call.write(junk)
            error = (await next_frame()).error
            assert error.code == pb.MALFORMED and reason in error.reason, error.reason
            after = pb.Frame(publish=pb.Publish(seq=2, envelope=text_envelope()))
            await call.write(encode_batch([(after, b"after")], 1 << 20)[0])
            assert list((await next_frame()).publish_ack.seqs) == [2]  # the stream goes on
            assert [(await sub.receive(timeout=5)).text for _ in range(2)] == ["before", "after"]
            call.cancel()
    finally:
        await server.stop(grace=0.5)


def test_decoder_marks_an_oversize_payload_without_buffering_it() -> None:
    decoder = FrameDecoder(max_payload=4)
    frames = decoder.feed(_chunk_start(10, b"12345") + PREFIX.pack(0, 5) + b"67890")
    (frame, payload), = frames
    assert isinstance(payload, latentwire._wire.Oversize) and (payload.size, payload.limit) == (10, 4)


# -- auth files -------------------------------------------------------------------------------

GOOD_HASH = hash_token("t", n=1024)
AUTH_FILES = {
    # name: (file name, content, reason excerpt)
    "not-toml": ("a.toml", "agents = [", "is not valid TOML"),
    "not-json": ("a.json", "{agents:", "is not valid JSON"),
    "json-array": ("a.json", "[]", "must hold a table/object at the top, not list"),
    "wrong-extension": ("a.yaml", "agents: {}", "must end in .toml or .json"),
    "no-agents-key": ("a.toml", "version = 1", "agents: Field required"),
    "no-agents": ("a.json", '{"agents": {}}', "lists no agents"),
    "bad-version": ("a.json", json.dumps({"version": 2, "agents": {"a": {"token_hash": GOOD_HASH}}}),
                    "version: Input should be 1"),
    "plain-token": ("a.json", json.dumps({"agents": {"a": {"token_hash": "hunter2"}}}),
                    "agents.a.token_hash: must look like 'scrypt$N$r$p$salt$hash'"),
    "bad-scrypt-n": ("a.json", json.dumps({"agents": {"a": {"token_hash": "scrypt$1000$8$1$AAAAAAAAAAA=$"
                                                                      + "A" * 44}}}),
                     "bad scrypt parameters N=1000"),
    "bad-base64": ("a.json", json.dumps({"agents": {"a": {"token_hash": "scrypt$1024$8$1$!!!$???"}}}),
                   "malformed number or base64"),
    "bad-acl-pattern": ("a.json", json.dumps({"agents": {"a": {"token_hash": GOOD_HASH,
                                                                 "publish": ["x/#/y"]}}}),
                        "agents.a.publish: invalid topic 'x/#/y'"),
    "unknown-key": ("a.json", json.dumps({"agents": {"a": {"token_hash": GOOD_HASH, "pubish": ["x"]}}}),
                    "agents.a.pubish: Extra inputs are not permitted"),
    "bad-agent-id": ("a.json", json.dumps({"agents": {"no spaces": {"token_hash": GOOD_HASH}}}),
                     "'no spaces' is not a valid agent id"),
    "negative-limit": ("a.json", json.dumps({"agents": {"a": {"token_hash": GOOD_HASH,
                                                              "limits": {"publish_rate": -1}}}}),
                       "agents.a.limits.publish_rate: Input should be greater than 0"),
    "unknown-limit": ("a.json", json.dumps({"defaults": {"limits": {"max_rate": 3}}, "agents": {"a": {
        "token_hash": GOOD_HASH}}}), "defaults.limits.max_rate: Extra inputs are not permitted"),
    "empty-send-pattern": ("a.json", json.dumps({"agents": {"a": {"token_hash": GOOD_HASH, "send": [""]}}}),
                           "agents.a.send: agent patterns must not be empty"),
    "admin-as-string": ("a.toml", f'[agents.a]\ntoken_hash = "{GOOD_HASH}"\nadmin = "yes"\n',
                        "agents.a.admin: Input should be a valid boolean"),
    "missing-file": (None, None, "cannot read auth file"),
}


@pytest.mark.parametrize("case", sorted(AUTH_FILES))
def test_bad_auth_file(tmp_path: Path, case: str) -> None:
    name, content, reason = AUTH_FILES[case]
    path = tmp_path / (name or "missing.toml")
    if content is not None:
        path.write_text(content)
    with pytest.raises(latentwire.ConfigError) as info:
        load_auth_file(path)
    assert reason in str(info.value) and str(path) in str(info.value), str(info.value)


def test_daemon_refuses_to_start_with_a_bad_auth_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text('{"agents": {"a": {"token_hash": "plaintext"}}}')
    out = subprocess.run([sys.executable, "-m", "latentwire.cli", "hub", "--port", "0",
                          "--auth-file", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "agents.a.token_hash: must look like 'scrypt$N$r$p$salt$hash'" in out.stdout + out.stderr
    assert "plaintext" not in out.stdout + out.stderr.replace(str(path), "")  # not even a wrong hash


# -- configuration values ----------------------------------------------------------------------

@pytest.mark.parametrize("settings, reason", [
    ({"max_message_bytes": 0}, "max_message_bytes must be a positive number, got 0"),
    ({"publish_window": -1}, "publish_window must be a positive number, got -1"),
    ({"session_expiry": True}, "session_expiry must be a positive number, got True"),
    ({"max_frame_bytes": 1024}, "max_frame_bytes must be at least 65536, got 1024"),
    ({"session_max_messages": "10"}, "session_max_messages must be a positive number, got '10'"),
])
def test_bad_hub_config(settings: dict, reason: str) -> None:
    with pytest.raises(latentwire.ConfigError, match=reason.replace("(", r"\(")):
        HubConfig(**settings)


@pytest.mark.parametrize("flags, env, reason", [
    (["--port", "abc"], {}, "argument --port: invalid int value: 'abc'"),
    ([], {"LATENTWIRE_HUB_PORT": "seven"}, "argument --port: invalid int value: 'seven'"),
    (["--publish-rate", "-1"], {}, "--publish-rate must be a positive number, got -1.0"),
    (["--max-subscriptions", "0"], {}, "--max-subscriptions must be a positive number, got 0"),
    (["--log-format", "xml"], {}, "argument --log-format: invalid choice: 'xml'"),
    (["--metrics-port", "0", "--metrics-topic", "a/#/b"], {}, "--metrics-topic: invalid topic 'a/#/b'"),
    (["--tls-client-ca", "ca.pem"], {}, "--tls-client-ca needs --tls-cert and --tls-key"),
    (["--max-message-bytes", "0"], {}, "max_message_bytes must be a positive number, got 0"),
])
def test_bad_daemon_flags(flags: list[str], env: dict, reason: str, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture) -> None:
    from latentwire import cli
    from latentwire.hub import daemon

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(daemon, "configure_logging", lambda *args: None)  # keep pytest's log capture
    try:
        status = cli.main(["hub", "--port", "0", *flags] if not env else ["hub", *flags])
    except SystemExit as exc:  # argparse refuses a bad value itself
        status = exc.code
    out = capsys.readouterr()
    assert status == 2
    assert reason in out.out + out.err, out.out + out.err


@pytest.mark.parametrize("url, options, reason", [
    ("grpc://127.0.0.1:1", {"receive_window": 0}, "receive_window must be >= 1"),
    ("grpc://127.0.0.1:1", {"tls_ca": "ca.pem"}, "TLS files were given for a plain grpc:// URL"),
    ("inproc://x", {"tls_ca": "ca.pem"}, "inproc:// takes no transport options"),
    ("grpc://:1", {}, "needs a host and port"),
])
def test_bad_connect_options(url: str, options: dict, reason: str) -> None:
    with pytest.raises((latentwire.ConfigError, ValueError), match=reason):
        latentwire.connect(url, **options)
