"""What is particular to ``nats://``: the message format any NATS client reads and writes, chunks,
URLs and options, credentials and TLS, bad input at connect time, and a three-node JetStream
cluster that loses a node while acknowledged messages flow.

The shared transport suite (test_bus.py and friends) runs on nats:// through conftest's `env`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import latentwire
from latentwire._message import Control, to_envelope

from .conftest import NatsServer, free_port, nats_server_binary, run_nats_server

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install 'latentwire[nats]')")

from latentwire.transports.nats import NatsTransport, SubjectMap, decode_message, encode_message  # noqa: E402
from latentwire.transports.nats.chunks import HDR_CHUNK, Reassembler, split  # noqa: E402
from latentwire.transports.nats.format import without_overlaps  # noqa: E402

pytestmark = pytest.mark.timeout(120)


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def connect_options(url: str, **options: object) -> dict:
    """The nats-py connect arguments an unopened bus on ``url`` would use for agent 'a'."""
    return latentwire.connect(url, **options)._transport.settings.connect_options("a", "")


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def url(nats_server: NatsServer, namespace: str) -> str:
    return f"{nats_server.url}/{namespace}"


# -- the format, without a server -------------------------------------------------------------------

def test_envelope_round_trips_through_subject_and_headers() -> None:
    subjects = SubjectMap("ns")
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    env, payload = to_envelope(topic="chat/dm", recipient="bob", latent=x, ttl=2.5, correlation_id="c-1",
                               reply_to="alice",
                               headers={"traceparent": "00-ab-cd-01", "odd name": " padded "})
    env.tensor.space, env.tensor.family = "hub", "gemma3"
    subject, headers, data = encode_message(env, payload, "alice", subjects)
    assert subject == "ns.inbox.bob" and bytes(data) == x.tobytes()
    assert headers["traceparent"] == "00-ab-cd-01" and "odd name" not in headers  # rides in Lw-Msg
    assert headers["Nats-Msg-Id"] == env.id and headers["Lw-Body"] == "tensor"
    back = decode_message(subject, headers, bytes(data), subjects)
    env.sender = "alice"
    assert back == env

    control, _ = to_envelope(topic="ctl/x", control=Control(kind="pause", args={"steps": 3, "why": "t"}))
    subject, headers, data = encode_message(control, b"", "p", subjects)
    assert subject == "ns.topic.ctl.x" and b'"pause"' in data  # control travels as JSON
    back = decode_message(subject, headers, data, subjects)
    assert back.control.kind == "pause" and dict(back.control.args) == {"steps": 3, "why": "t"}


def test_topics_with_characters_nats_reads_differently_are_escaped() -> None:
    subjects = SubjectMap("ns")
    for topic in ["a.b/c d/x*", "v1.2/>/%41", "ünï/cödé", "$x/y"]:
        subject = subjects.topic(topic)
        assert all(c not in t for t in subject.split(".")[2:] for c in " *>")
        assert subjects.parse(subject) == ("topic", topic)
    assert subjects.filter("a/+/c") == ["ns.topic.a.*.c"]
    assert subjects.filter("a/#") == ["ns.topic.a", "ns.topic.a.>"]  # '#' matches its parent too
    assert subjects.filter("#") == ["ns.topic.>"]
    assert subjects.parse(subjects.inbox("agent.one")) == ("inbox", "agent.one")
    assert subjects.consumer("agent.one") == "agent%2Eone"


def test_consumer_filters_never_overlap() -> None:
    """A JetStream consumer refuses a filter that another one covers; one delivery per message."""
    assert without_overlaps(["a.b", "a.>", "a.*", "b.*.c", "b.x.*", "a.>"]) == ["a.>", "b.*.c", "b.x.*"]
    filters = SubjectMap("ns").consumer_filters("c", {"t/#", "t/+"})
    assert filters == ["ns.inbox.c", "ns.topic.t", "ns.topic.t.>"]


@pytest.mark.parametrize(("headers", "match"), [
    ({"Lw-Body": "tensor", "Lw-Tensor": '{"dtype": "float32", "shape": [2, "x"]}'}, "TypeError"),
    ({"Lw-Msg": '{"created_ns": "yesterday"}'}, "invalid literal"),
    ({"Lw-Msg": "not json"}, "Expecting value"),
    ({"Lw-Body": "video"}, "unknown Lw-Body 'video'"),
])
def test_unreadable_headers_are_refused_clearly(headers: dict[str, str], match: str) -> None:
    with pytest.raises(latentwire.InvalidMessage, match=f"unreadable NATS message on 'ns.topic.a'.*{match}"):
        decode_message("ns.topic.a", headers, b"\0" * 8, SubjectMap("ns"))
    with pytest.raises(latentwire.InvalidMessage, match="outside namespace"):
        decode_message("other.topic.a", {}, b"", SubjectMap("ns"))


def test_reserved_header_names_are_refused() -> None:
    env, payload = to_envelope(topic="a", text="x", headers={"Nats-Msg-Id": "forged"})
    with pytest.raises(latentwire.InvalidMessage, match="'Nats-Msg-Id' is reserved on nats://"):
        encode_message(env, payload, "p", SubjectMap("ns"))


def test_chunks_reassemble_bit_exact_in_any_order() -> None:
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    parts = split({"Lw-Msg": "{}"}, data, "m1", 3000)
    assert len(parts) == 4 and parts[0][0]["Lw-Msg"] == "{}" and "Lw-Msg" not in parts[1][0]
    assert [p[0]["Nats-Msg-Id"] for p in parts] == ["m1/0", "m1/1", "m1/2", "m1/3"]
    chunks = Reassembler()
    order = [2, 0, 3, 0, 1]  # a redelivered chunk replaces the earlier copy and its ack subject
    done = [chunks.add(parts[i][0][HDR_CHUNK], parts[i][0], bytes(parts[i][1]), 100 + i, f"ack{i}.{n}", False)
            for n, i in enumerate(order)]
    assert done[:-1] == [None] * 4 and chunks.missing == 0
    whole = done[-1]
    assert whole.payload == data and whole.seq == 100 and whole.headers["Lw-Msg"] == "{}"
    assert whole.acks == ["ack0.3", "ack1.4", "ack2.0", "ack3.2"]
    capped = Reassembler(max_payload=5000)  # above the receive cap: acks kept, bytes not
    for i in range(4):
        last = capped.add(parts[i][0][HDR_CHUNK], parts[i][0], bytes(parts[i][1]), i, f"a{i}", False)
    assert isinstance(last.payload, latentwire.transports.base.Oversize) and len(last.acks) == 4
    assert split({}, b"small", "m2", 3000) == [({}, b"small")]


def test_urls_and_options(tls_files: dict[str, Path]) -> None:
    transport = latentwire.connect("nats://n1:4222,n2,[::1]:4223/fleet-a")._transport
    assert isinstance(transport, NatsTransport)
    t = transport.settings
    assert t.servers == [("n1", 4222), ("n2", 4222), ("::1", 4223)]
    assert (t.subjects.namespace, t.subjects.stream, t.tls_context) == ("fleet-a", "LW_fleet-a", None)
    options = t.connect_options("agent", "")
    assert options["servers"] == ["nats://n1:4222", "nats://n2:4222", "nats://[::1]:4223"]
    bus = latentwire.connect("tls://alice:s%40cret@n1/ns", tls_ca=tls_files["cert"], replicas=3)
    t = bus._transport.settings
    options = t.connect_options("agent", "")
    assert (options["user"], options["password"], options["servers"]) == ("alice", "s@cret", ["tls://n1:4222"])
    assert t.tls_context is not None and t.replicas == 3
    assert latentwire.connect("nats+tls://n1")._transport.settings.tls
    assert connect_options("nats://t0ken@n1")["token"] == "t0ken"
    assert connect_options("nats://n1", token="tk")["token"] == "tk"
    with pytest.raises(latentwire.ConfigError, match="use tls://"):
        latentwire.connect("nats://n1", tls_ca=tls_files["cert"])
    with pytest.raises(latentwire.ConfigError, match="needs a host"):
        latentwire.connect("nats:///ns")
    with pytest.raises(latentwire.ConfigError, match="bad NATS server 'n1:x'"):
        latentwire.connect("nats://n1:x")
    with pytest.raises(latentwire.ConfigError, match="replicas must be 1-5"):
        latentwire.connect("nats://n1", replicas=7)
    with pytest.raises(latentwire.ConfigError, match="one kind of NATS credentials"):
        latentwire.connect("nats://n1", token="a", user="u", password="p")
    with pytest.raises(latentwire.ConfigError, match="nkey_seed file '/nonexistent.nk' does not exist"):
        latentwire.connect("nats://n1", nkey_seed="/nonexistent.nk")


def test_a_namespace_with_illegal_subject_characters_is_refused_at_connect() -> None:
    for bad in ["a.b", "fleet a", "x*", "a>b"]:
        with pytest.raises(latentwire.ConfigError, match=re.escape(
                f"NATS namespace {bad!r} is not a plain subject token: use 1-64 of A-Z a-z 0-9 _ -")):
            latentwire.connect(f"nats://127.0.0.1:4222/{bad}")


# -- against a server ---------------------------------------------------------------------------------

async def test_a_plain_nats_client_reads_a_latent(nats_server: NatsServer, url: str, namespace: str) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    plain = await nats.connect(nats_server.url)
    try:
        sub = await plain.subscribe(f"{namespace}.topic.>")
        async with latentwire.connect(url, agent="speaker") as bus:
            await bus.publish("robots/arm", latent=latentwire.Latent(x, space="hub"),
                              headers={"traceparent": TRACEPARENT})
            msg = await sub.next_msg(timeout=5)
    finally:
        await plain.close()
    assert msg.subject == f"{namespace}.topic.robots.arm" and msg.data == x.tobytes()
    assert msg.headers["Lw-Body"] == "tensor"
    assert msg.headers["Lw-Tensor"] == '{"dtype":"float32","shape":[2,3],"space":"hub"}'
    assert '"sender":"speaker"' in msg.headers["Lw-Msg"]
    assert msg.headers["traceparent"].startswith("00-4bf92f35")


async def test_a_plain_jetstream_publish_arrives_as_text(nats_server: NatsServer, url: str,
                                                         namespace: str) -> None:
    plain = await nats.connect(nats_server.url)
    try:
        async with latentwire.connect(url, agent="listener") as bus:
            sub = await bus.subscribe("sensors/+")
            ack = await plain.jetstream().publish(f"{namespace}.topic.sensors.door", b"open")
            assert ack.stream == f"LW_{namespace}"
            msg = await sub.receive(timeout=5)
    finally:
        await plain.close()
    assert (msg.topic, msg.text, msg.sender) == ("sensors/door", "open", "")


async def test_a_latent_above_max_payload_travels_chunked_bit_exact(url: str) -> None:
    big = np.random.default_rng(1).integers(0, 2**31, size=(3, 200_000), dtype=np.int32)  # 2.3 MiB
    async with latentwire.connect(url, agent="p") as p, \
            latentwire.connect(url, agent="c", receive_window=1) as c:
        sub = await c.subscribe("big/#")
        await p.publish("big/1", latent=big)
        await p.publish("big/2", "after it")
        msg = await sub.receive(timeout=20)
        assert msg.latent.numpy().tobytes() == big.tobytes()
        assert (await sub.receive(timeout=20)).text == "after it"


async def test_a_session_outlives_its_connection_until_bye(url: str) -> None:
    """Messages for an agent whose bus is away wait in its consumer; bye deletes it."""
    async with latentwire.connect(url, agent="p") as p:
        c = latentwire.connect(url, agent="c", reconnect_timeout=30)
        await c.open()
        sub = await c.subscribe("news")
        session = c.session_id
        await c._conn._nc.close()  # the connection drops without a bye; the bus reconnects
        for i in range(5):
            await p.publish("news", str(i))
        await p.send("c", "still known")
        # The bus came back to the same session: everything published meanwhile arrives.
        got = [await sub.receive(timeout=10) for _ in range(5)]
        assert c.session_id == session
        assert [m.text for m in got] == [str(i) for i in range(5)]
        assert (await c.inbox().receive(timeout=5)).text == "still known"
        await c.aclose()
        with pytest.raises(latentwire.UnknownAgent, match="no session with that id in NATS namespace"):
            await p.send("c", "gone")


# -- bad input at connect time ------------------------------------------------------------------------

async def test_unreachable_cluster() -> None:
    with pytest.raises(latentwire.ConnectError,
                       match="no NATS server reachable at 127.0.0.1:9,127.0.0.1:8") as info:
        async with latentwire.connect("nats://127.0.0.1:9,127.0.0.1:8", connect_timeout=2):
            pass
    assert str(info.value).endswith("check the URL's host:port list and that nats-server runs there")


async def test_a_silent_server_is_not_waited_on_forever() -> None:
    peers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: peers.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(latentwire.ConnectError, match=f"127.0.0.1:{port}"):
            async with latentwire.connect(f"nats://127.0.0.1:{port}", connect_timeout=0.5):
                pass
        assert time.monotonic() - started < 5
    finally:
        for writer in peers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_without_jetstream(tmp_path: Path) -> None:
    port = free_port()
    with run_nats_server(tmp_path, f'listen: "127.0.0.1:{port}"\n', port):
        with pytest.raises(latentwire.ConnectError,
                           match="the NATS server has no JetStream; start it with -js"):
            async with latentwire.connect(f"nats://127.0.0.1:{port}/ns", agent="a", connect_timeout=5):
                pass


async def test_credentials_token_and_user_password(tmp_path: Path) -> None:
    port, store = free_port(), tmp_path / "store"
    config = (f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{store}" }}\n'
              'authorization { users: [ {user: alice, password: s3cret}, '
              '{user: bob, password: hunter2} ] }\n')
    (tmp_path / "a").mkdir()
    with run_nats_server(tmp_path / "a", config, port):
        with pytest.raises(latentwire.Unauthenticated, match="refused the credentials") as info:
            async with latentwire.connect(f"nats://alice:wrong@127.0.0.1:{port}/ns", agent="alice"):
                pass
        # One line: what was presented (never the secret) and what to give instead.
        assert "as 'alice' with user 'alice' and a password: the NATS server refused" in str(info.value)
        assert "wrong" not in str(info.value) and "\n" not in str(info.value)
        assert str(info.value).endswith("or token=, user= and password=, nkey_seed= or creds=")
        with pytest.raises(latentwire.Unauthenticated, match="Authorization Violation") as info:
            async with latentwire.connect(f"nats://127.0.0.1:{port}/ns", agent="nobody"):
                pass
        assert "as 'nobody' with no credentials: " in str(info.value)
        async with latentwire.connect(f"nats://alice:s3cret@127.0.0.1:{port}/ns", agent="alice") as a, \
                latentwire.connect(f"nats://127.0.0.1:{port}/ns", agent="bob", user="bob",
                                   password="hunter2") as b:
            sub = await b.subscribe("hello")
            await a.publish("hello", "from alice")
            assert (await sub.receive(timeout=5)).text == "from alice"
    tport = free_port()
    (tmp_path / "t").mkdir()
    config = (f'listen: "127.0.0.1:{tport}"\njetstream {{ store_dir: "{tmp_path / "tstore"}" }}\n'
              'authorization { token: "t0ken" }\n')
    with run_nats_server(tmp_path / "t", config, tport):
        with pytest.raises(latentwire.Unauthenticated, match="with a token: the NATS server refused the "
                                                             "credentials") as info:
            async with latentwire.connect(f"nats://127.0.0.1:{tport}/ns", agent="a", token="wrong"):
                pass
        assert "wrong" not in str(info.value)
        async with latentwire.connect(f"nats://127.0.0.1:{tport}/ns", agent="a", token="t0ken") as bus:
            await bus.publish("x", "in")


async def test_tls_verifies_the_server_certificate(tmp_path: Path, tls_files: dict[str, Path]) -> None:
    port = free_port()
    config = (f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp_path / "store"}" }}\n'
              f'tls {{ cert_file: "{tls_files["cert"]}", key_file: "{tls_files["key"]}" }}\n')
    with run_nats_server(tmp_path, config, port):
        url = f"tls://127.0.0.1:{port}/ns"
        async with latentwire.connect(url, agent="p", tls_ca=tls_files["cert"]) as p, \
                latentwire.connect(url, agent="c", tls_ca=tls_files["cert"]) as c:
            sub = await c.subscribe("secure/#")
            await p.publish("secure/x", latent=np.arange(4, dtype=np.int64))
            assert (await sub.receive(timeout=5)).latent.numpy().tolist() == [0, 1, 2, 3]
        with pytest.raises(latentwire.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            async with latentwire.connect(url, agent="x", connect_timeout=5):  # system roots only
                pass


async def test_tls_refuses_a_server_that_would_talk_in_plain_text(tmp_path: Path,
                                                                  tls_files: dict[str, Path]) -> None:
    # Without this check nats-py would send the CONNECT (and the password) unencrypted: it
    # upgrades only when the server requires TLS.
    port = free_port()
    config = (f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp_path / "store"}" }}\n'
              'authorization { user: "alice", password: "s3cret" }\n')
    with run_nats_server(tmp_path, config, port):
        refused = rf"127.0.0.1:{port} does not require TLS.*use nats://"
        with pytest.raises(latentwire.ConfigError, match=refused):
            async with latentwire.connect(f"tls://alice:s3cret@127.0.0.1:{port}/ns", agent="a",
                                          tls_ca=tls_files["cert"]):
                pass


def test_nkey_and_creds_need_the_nkeys_package(tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_text("SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY\n")
    try:
        import nkeys  # noqa: F401
    except ImportError:
        with pytest.raises(latentwire.ConfigError, match=r"pip install 'nats-py\[nkeys\]'"):
            latentwire.connect("nats://n1", nkey_seed=seed)
    else:
        assert connect_options("nats://n1", nkey_seed=seed)["nkeys_seed"]


# -- a three-node JetStream cluster -------------------------------------------------------------------

class Cluster:
    """Three nats-server nodes on loopback, routed to each other, each with its own store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = [free_port() for _ in range(3)]
        routes = [free_port() for _ in range(3)]
        self.configs = []
        for i in range(3):
            node = folder / f"n{i}"
            node.mkdir()
            others = ", ".join(f'"nats-route://127.0.0.1:{r}"' for j, r in enumerate(routes) if j != i)
            self.configs.append(
                f'server_name: n{i}\nlisten: "127.0.0.1:{self.ports[i]}"\n'
                f'jetstream {{ store_dir: "{node / "store"}" }}\n'
                f'cluster {{ name: lwtest, listen: "127.0.0.1:{routes[i]}", routes: [{others}] }}\n')
        self._stack = contextlib.ExitStack()
        self.processes: list = [None] * 3

    @property
    def url(self) -> str:
        return "nats://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @property
    def servers(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    def start(self, i: int) -> None:
        self.processes[i] = self._stack.enter_context(
            run_nats_server(self.folder / f"n{i}", self.configs[i], self.ports[i]))

    def kill(self, i: int) -> None:
        self.processes[i].send_signal(signal.SIGKILL)
        self.processes[i].wait()

    async def wait_for_meta_leader(self, timeout: float = 30) -> None:
        """JetStream in a cluster answers only once its nodes elected a meta leader."""
        deadline = time.monotonic() + timeout
        while True:
            nc = await nats.connect(servers=self.servers)
            try:
                await nc.jetstream(timeout=1).account_info()
                return
            except (nats.errors.Error, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)
            finally:
                await nc.close()

    async def stream_leader(self, stream: str) -> int:
        nc = await nats.connect(servers=self.servers)
        try:
            info = await nc.jetstream(timeout=5).stream_info(stream)
            assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2
            return int(info.cluster.leader.removeprefix("n"))
        finally:
            await nc.close()

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nats_server_binary()
    c = Cluster(tmp_path)
    try:
        for i in range(3):
            c.start(i)
        yield c
    finally:
        c.close()


class Counting(latentwire.Agent):
    """Counts every message its handler is given, by text."""

    def __init__(self) -> None:
        super().__init__("counter")
        self.seen: Counter[str] = Counter()

    @latentwire.on("load/#")
    async def count(self, msg: latentwire.Message) -> None:
        self.seen[msg.text] += 1


async def lose_a_node_under_load(cluster: Cluster, n: int) -> tuple[int, int, Counter[str], float]:
    """Publish ``n`` messages while the stream leader's node is SIGKILLed and restarted; return
    (acknowledged, refused, what the handler saw, seconds)."""
    await cluster.wait_for_meta_leader()
    url = f"{cluster.url}/ha"
    options = {"replicas": 3, "puback_timeout": 2.0, "reconnect_timeout": 60, "connect_timeout": 5}
    counter = Counting()
    started = time.monotonic()
    async with latentwire.Runtime(url, **options).add(counter):
        leader = await cluster.stream_leader("LW_ha")
        async with latentwire.connect(url, agent="producer", **options) as producer:
            done = 0

            async def publish(i: int) -> str:
                nonlocal done
                msg_id = await producer.publish(f"load/{i % 7}", str(i))
                done += 1
                return msg_id

            tasks = [asyncio.ensure_future(publish(i)) for i in range(n)]
            while done < n // 3:
                await asyncio.sleep(0.01)
            cluster.kill(leader)  # mid-stream: the stream and consumer leaders move
            await asyncio.sleep(1.0)
            cluster.start(leader)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        acknowledged = [str(i) for i, r in enumerate(results) if isinstance(r, str)]
        deadline = time.monotonic() + 60
        while not set(acknowledged) <= set(counter.seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        missing = set(acknowledged) - set(counter.seen)
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
    return len(acknowledged), n - len(acknowledged), counter.seen, time.monotonic() - started


async def test_cluster_loses_a_node_under_10k_acknowledged_messages(cluster: Cluster) -> None:
    """10,000 publishes to a stream with 3 replicas while its leader's node is SIGKILLed and
    restarted: every acknowledged message reaches the handler, exactly once."""
    acknowledged, refused, seen, seconds = await lose_a_node_under_load(cluster, 10_000)
    print(f"\n10k cluster run: {acknowledged} acknowledged, {refused} refused, "
          f"{sum(seen.values())} handled, {len(seen)} distinct, {seconds:.1f} s")
    assert acknowledged == 10_000 and refused == 0
    assert max(seen.values()) == 1, [t for t, k in seen.items() if k > 1][:5]  # no duplicates
