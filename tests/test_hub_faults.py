"""The hub faults outside testers found (issue 18), each as a user or an attacker meets it.

Memory before authentication (nothing is buffered for a client before its hello is accepted,
buffers grow with the bytes received, an agent's own size limit caps its decoder), failed
logins that must not starve good ones, and the gRPC status of every refused call.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import grpc
import latentwire
import pytest
from latentwire._grpc_stream import METHOD
from latentwire._proto import bus_pb2 as pb
from latentwire._wire import PREFIX, FrameDecoder
from latentwire.hub import Hub
from latentwire.hub.auth import AuthFile, Policy
from latentwire.hub.server import serve
from latentwire.hub.tokens import hash_token

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
DECLARED = 250 * MiB  # what the testers' streams declared: just under --max-message-bytes
TOKENS = {"alice": "alice-secret-token", "carol": "carol-secret-token"}
HASHES = {agent: hash_token(token, n=1024) for agent, token in TOKENS.items()}


def _auth_policy() -> Policy:
    return Policy(AuthFile.model_validate({"agents": {
        "alice": {"token_hash": HASHES["alice"], "publish": ["#"], "subscribe": ["#"]},
        "carol": {"token_hash": HASHES["carol"], "publish": ["#"], "subscribe": ["#"],
                  "limits": {"max_message_bytes": 2048}},
    }}))


def _frame_bytes(frame: pb.Frame, payload: bytes = b"") -> bytes:
    header = frame.SerializeToString()
    return PREFIX.pack(len(header), len(payload)) + header + payload


def _big_publish_start(declared: int = DECLARED) -> bytes:
    """The first chunk of a publish whose header declares ``declared`` payload bytes."""
    envelope = pb.Envelope(id="big", topic="t")
    envelope.tensor.dtype = "uint8"
    envelope.tensor.shape.append(declared)
    return _frame_bytes(pb.Frame(payload_size=declared, publish=pb.Publish(seq=1, envelope=envelope)),
                        b"\0" * 1024)


class _Raw:
    """One raw gRPC call to a hub, speaking wire bytes."""

    def __init__(self, url: str) -> None:
        self.channel = grpc.aio.insecure_channel(url.split("://", 1)[1])
        self.call = self.channel.stream_stream(METHOD)()
        self.decoder = FrameDecoder()

    async def next_frame(self, timeout: float = 5) -> pb.Frame | None:
        """The hub's next frame, or None when it sent nothing within ``timeout`` s."""
        try:
            message = await asyncio.wait_for(self.call.read(), timeout)
        except TimeoutError:
            return None
        assert message is not grpc.aio.EOF, "the hub ended the call without a frame"
        return self.decoder.feed(message)[0][0]

    async def aclose(self) -> None:
        self.call.cancel()
        await self.channel.close()


@pytest.fixture
def traced():
    """Python allocations of this process (the hub runs in it) during the test."""
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _peak_mib() -> float:
    return tracemalloc.get_traced_memory()[1] / MiB


# -- 1. memory before authentication -------------------------------------------------------------


async def test_a_prehello_chunked_publish_is_refused_without_buffering(traced) -> None:
    server = await serve(Hub(), port=0)
    raw = _Raw(server.url)
    try:
        tracemalloc.reset_peak()
        await raw.call.write(_big_publish_start())
        answer = await raw.next_frame()
        assert _peak_mib() < 16, f"the hub allocated {_peak_mib():.0f} MiB for a client without a hello"
        assert answer is not None and answer.error.code == pb.MALFORMED
        assert "first frame must be hello, got publish" in answer.error.reason
        assert await asyncio.wait_for(raw.call.code(), 5) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await raw.aclose()
        await server.stop(grace=0.5)


async def test_a_declared_size_is_not_allocated_before_its_bytes_arrive(traced) -> None:
    server = await serve(Hub(), port=0)  # no auth file: the 256 MiB hub cap applies
    raw = _Raw(server.url)
    try:
        await raw.call.write(_frame_bytes(pb.Frame(hello=pb.Hello(agent="big", receive_window=4))))
        assert (await raw.next_frame()).HasField("welcome")
        tracemalloc.reset_peak()
        await raw.call.write(_big_publish_start())
        assert await raw.next_frame(timeout=0.5) is None  # the rest of the payload is awaited ...
        assert _peak_mib() < 16, f"the hub allocated {_peak_mib():.0f} MiB for 1 KiB received"
    finally:
        await raw.aclose()
        await server.stop(grace=0.5)


async def test_an_agent_above_its_own_size_limit_is_refused_from_the_header(traced) -> None:
    hub = Hub(policy=_auth_policy())
    server = await serve(hub, port=0)
    raw = _Raw(server.url)
    try:
        hello = pb.Hello(agent="carol", token=TOKENS["carol"], receive_window=4)
        await raw.call.write(_frame_bytes(pb.Frame(hello=hello)))
        assert (await raw.next_frame()).HasField("welcome")
        tracemalloc.reset_peak()
        await raw.call.write(_big_publish_start())
        ack = (await raw.next_frame()).publish_ack
        assert _peak_mib() < 16, f"the hub allocated {_peak_mib():.0f} MiB beyond carol's 2048-byte limit"
        [rejection] = ack.rejections
        assert (rejection.code, rejection.limit) == (pb.PAYLOAD_TOO_LARGE, 2048)
    finally:
        await raw.aclose()
        await server.stop(grace=0.5)


# -- 6. every refused call ends with an error frame and a matching gRPC status -------------------


@pytest.mark.parametrize("first, code, status, reason", [
    (b"\x01\x02\x03", pb.MALFORMED, grpc.StatusCode.INVALID_ARGUMENT, "truncated frame prefix"),
    (_frame_bytes(pb.Frame(bye=pb.Bye())), pb.MALFORMED, grpc.StatusCode.INVALID_ARGUMENT,
     "first frame must be hello, got bye"),
    (_frame_bytes(pb.Frame(hello=pb.Hello(agent="a b"))), pb.INVALID_ARGUMENT,
     grpc.StatusCode.INVALID_ARGUMENT, "invalid agent id 'a b'"),
    (_frame_bytes(pb.Frame(hello=pb.Hello(agent="ok", subscriptions=["a/#/b"]))), pb.INVALID_TOPIC,
     grpc.StatusCode.INVALID_ARGUMENT, "'#' must be a whole level"),
], ids=["garbage", "not-hello", "bad-agent", "bad-filter"])
async def test_a_refused_first_frame_gets_an_error_frame_and_a_status(
        first: bytes, code: int, status: grpc.StatusCode, reason: str) -> None:
    server = await serve(Hub(), port=0)
    raw = _Raw(server.url)
    try:
        await raw.call.write(first)
        answer = await raw.next_frame()
        assert answer is not None and answer.error.code == code and reason in answer.error.reason, answer
        assert await asyncio.wait_for(raw.call.code(), 5) == status
        assert reason in await raw.call.details()
    finally:
        await raw.aclose()
        await server.stop(grace=0.5)


async def test_an_agent_id_in_use_and_a_draining_hub_end_with_their_status() -> None:
    server = await serve(Hub(), port=0)
    raw = _Raw(server.url)
    try:
        async with latentwire.connect(server.url, agent="taken"):
            await raw.call.write(_frame_bytes(pb.Frame(hello=pb.Hello(agent="taken"))))
            assert (await raw.next_frame()).error.code == pb.ALREADY_EXISTS
            assert await asyncio.wait_for(raw.call.code(), 5) == grpc.StatusCode.ALREADY_EXISTS
        server.hub.draining = True
        late = _Raw(server.url)
        try:
            await late.call.write(_frame_bytes(pb.Frame(hello=pb.Hello(agent="late"))))
            assert (await late.next_frame()).error.code == pb.UNAVAILABLE
            assert await asyncio.wait_for(late.call.code(), 5) == grpc.StatusCode.UNAVAILABLE
        finally:
            await late.aclose()
    finally:
        await raw.aclose()
        await server.stop(grace=0.5)


async def test_a_publish_window_overrun_is_resource_exhausted(make_env) -> None:
    from .test_bad_input import RawClient, tensor_envelope

    env = await make_env(session_max_messages=1, publish_window=2)
    if env.kind == "mqtt":
        pytest.skip("the publish window is the hub's")
    async with env.connect("c", receive_window=1) as c, RawClient(env, "greedy") as raw:
        await c.subscribe("t")
        frames = [(pb.Frame(publish=pb.Publish(seq=seq, envelope=tensor_envelope("uint8", [1]))), b"x")
                  for seq in range(1, 5)]
        await raw.conn.send(frames)
        rejected: list[pb.Rejection] = []
        async with asyncio.timeout(5):
            while not rejected:
                for frame, _ in await raw.conn.receive():
                    rejected += frame.publish_ack.rejections
        assert rejected[0].code == pb.RESOURCE_EXHAUSTED and "publish window exceeded" in rejected[0].reason


# -- 5. ports ------------------------------------------------------------------------------------


def _hub_command(*flags: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """``latentwire hub FLAGS`` that is expected to stop by itself (a refused setting)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWIRE_")}
    return subprocess.run([sys.executable, "-m", "latentwire.cli", "hub", *flags],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("flag, value", [("--port", "99999"), ("--port", "-5"),
                                         ("--metrics-port", "65536"), ("--metrics-port", "-1"),
                                         ("--dashboard-port", "70000")])
def test_an_out_of_range_port_exits_2_naming_the_setting(flag: str, value: str) -> None:
    proc = _hub_command("--port", "0", flag, value) if flag != "--port" else _hub_command(flag, value)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"latentwire hub: {flag} must be a port number from 0 to 65535, "
                                        f"got {value}"]


async def test_a_port_in_use_is_refused() -> None:
    server = await serve(Hub(), port=0)
    try:
        with pytest.raises(latentwire.ConfigError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            await serve(Hub(), port=server.port)
        proc = await asyncio.to_thread(_hub_command, "--port", str(server.port))
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        [line] = proc.stdout.splitlines()  # (gRPC's own log may add lines to stderr)
        assert f"cannot listen on 127.0.0.1:{server.port}" in line and "in use" in line
    finally:
        await server.stop(grace=0.5)


@pytest.mark.parametrize("flag, what", [("--metrics-port", "metrics"), ("--dashboard-port", "the dashboard")])
async def test_a_metrics_or_dashboard_port_in_use_is_refused(flag: str, what: str) -> None:
    server = await serve(Hub(), port=0)  # its gRPC port is taken for the metrics server or dashboard
    try:
        proc = await asyncio.to_thread(_hub_command, "--port", "0", flag, str(server.port))
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        [line] = proc.stdout.splitlines()  # before the banner: nothing said it was listening
        assert f"{flag} {server.port}: cannot serve {what} on 127.0.0.1:{server.port}" in line
    finally:
        await server.stop(grace=0.5)


# -- 4. failed logins do not starve good ones ------------------------------------------------------


async def _hello(hub: Hub, agent: str, token: str, peer: str | None) -> pb.Frame:
    """One hello over an in-process connection from ``peer`` (an address); the hub's answer."""
    from latentwire.hub.inproc import connection_pair

    client, server = connection_pair()
    server.peer_address = peer
    hub.spawn_connection(server)
    try:
        await client.send([(pb.Frame(hello=pb.Hello(agent=agent, token=token, receive_window=4)), b"")])
        return (await client.receive())[0][0]
    finally:
        await client.aclose()


async def test_bad_logins_from_one_address_do_not_starve_a_good_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from latentwire.hub import auth

    events: list[str] = []  # "bad" or "good" as each token check starts, "good-done" at the end
    real = auth.verify_token

    def counted(token: str, stored: str) -> bool:
        good = token == TOKENS["alice"]
        events.append("good" if good else "bad")
        try:
            return real(token, stored)
        finally:
            if good:
                events.append("good-done")

    monkeypatch.setattr(auth, "verify_token", counted)
    policy = _auth_policy()
    hub = Hub(policy=policy)
    waiting = 0
    admit = policy.admit

    async def counting_admit(*args, **kwargs):
        nonlocal waiting
        waiting += 1
        return await admit(*args, **kwargs)

    policy.admit = counting_admit
    try:
        bad = [asyncio.create_task(_hello(hub, "carol", f"wrong-{i}", "ipv4:203.0.113.9")) for i in range(40)]
        async with asyncio.timeout(10):
            while waiting < 40:  # every bad hello is in line before the good one comes
                await asyncio.sleep(0.001)
            welcome = await _hello(hub, "alice", TOKENS["alice"], "ipv4:198.51.100.1")
        assert welcome.HasField("welcome"), welcome
        before_good = events[:events.index("good-done")].count("bad")
        assert before_good <= 2, f"{before_good} bad token checks ran before the good login finished"
        assert not all(task.done() for task in bad)  # the bad ones are still paced
    finally:
        for task in bad:
            task.cancel()
        await asyncio.gather(*bad, return_exceptions=True)
        await hub.aclose()


async def test_failed_logins_back_off_per_address_and_the_table_is_bounded() -> None:
    from latentwire.errors import LimitExceeded
    from latentwire.hub.auth import LoginThrottle

    throttle = LoginThrottle(backoff=0.01, backoff_max=0.02, max_peers=3, wait=5)
    for _ in range(3):
        assert not await throttle.check("ipv4:203.0.113.9", lambda: False)
    assert throttle.failures("ipv4:203.0.113.9") == 3
    assert await throttle.check("ipv4:198.51.100.1", lambda: True)  # another address: no backoff
    assert await throttle.check("ipv4:203.0.113.9", lambda: True)
    assert throttle.failures("ipv4:203.0.113.9") == 0  # a success resets it
    for i in range(20):
        await throttle.check(f"ipv4:192.0.2.{i}", lambda: False)
    assert len(throttle) == 3

    # A hello that waits too long for its turn is refused, and the address stays usable.
    import threading

    release = threading.Event()
    slow = LoginThrottle(wait=0.2)
    first = asyncio.create_task(slow.check("ipv4:203.0.113.9", lambda: release.wait(5)))
    await asyncio.sleep(0.05)
    with pytest.raises(LimitExceeded, match="too many logins waiting from ipv4:203.0.113.9; retry later"):
        await slow.check("ipv4:203.0.113.9", lambda: True)
    release.set()
    assert await first
    assert await slow.check("ipv4:203.0.113.9", lambda: True)


async def test_the_grpc_hub_paces_failed_logins_by_address() -> None:
    hub = Hub(policy=_auth_policy())
    server = await serve(hub, port=0)
    try:
        with pytest.raises(latentwire.Unauthenticated, match="invalid token"):
            async with latentwire.connect(server.url, agent="alice", token="wrong-token-here"):
                pass
        assert hub.logins.failures("ipv4:127.0.0.1") == 1  # by address: the client's port varies
        async with latentwire.connect(server.url, agent="alice", token=TOKENS["alice"]):
            pass
        assert hub.logins.failures("ipv4:127.0.0.1") == 0
    finally:
        await server.stop(grace=0.5)


# -- 2. the journal is more than one file ------------------------------------------------------------

_CRASHING_WRITER = """
import asyncio, os, sys, time
from latentwire._proto import bus_pb2 as pb
from latentwire.hub import journal as journal_module
from latentwire.hub.journal import Journal

path, count, interval, linger = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
journal_module.CHECKPOINT_INTERVAL = interval

async def main():
    journal = await Journal.open(path)
    journal.save_session("s1", "consumer", ["t"])
    for seq in range(1, count + 1):
        journal.add_message(pb.Envelope(id=f"m{seq}", topic="t"), b"x" * 100, 120).delivered("s1", seq)
        await journal.sync()  # acknowledged: on disk
    time.sleep(linger)  # the writer thread may checkpoint meanwhile
    os._exit(0)  # killed: no close, no final checkpoint

asyncio.run(main())
"""


def _crash_image(folder: Path, count: int = 20, checkpoint_interval: float = 3600.0,
                 linger: float = 0.0) -> Path:
    """A journal whose hub acknowledged ``count`` messages and was killed; its path."""
    path = folder / "journal.db"
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(path), str(count), str(checkpoint_interval),
                    str(linger)], check=True, timeout=60)
    return path


async def _restored(path: Path, **options) -> int:
    from latentwire.hub import Journal

    journal = await Journal.open(path, **options)
    try:
        return journal.stats.restored_deliveries
    finally:
        await journal.aclose()


async def test_a_journal_killed_with_its_wal_restores_everything(tmp_path: Path, caplog) -> None:
    path = _crash_image(tmp_path)
    assert Path(f"{path}-wal").stat().st_size > 0  # the acknowledged messages are only there
    assert await _restored(path) == 20
    assert "the hub did not stop cleanly; recovering" in caplog.text
    assert not Path(f"{path}-wal").exists()  # a clean close folds the WAL back into the file
    caplog.clear()
    assert await _restored(path) == 20 and "did not stop cleanly" not in caplog.text


async def test_a_missing_wal_after_a_crash_is_refused_and_named(tmp_path: Path, caplog) -> None:
    from latentwire.hub import JournalError

    path = _crash_image(tmp_path)
    Path(f"{path}-wal").unlink()  # e.g. only journal.db was copied or backed up
    for _ in range(2):  # refusing changes nothing: the second start is refused the same way
        with pytest.raises(JournalError) as info:
            await _restored(path)
        assert str(info.value) == (
            f"journal {path}: the hub did not stop cleanly and journal.db-wal is missing: the main "
            "file holds the journal up to commit 0, and what was acknowledged after that was only in "
            "journal.db-wal. Put back the "
            "journal.db-wal that belongs with this file (same disk or backup), or start with "
            "--journal-recover to accept losing those messages")
    assert await _restored(path, recover=True) == 0  # accepted loss, said out loud:
    assert "journal.db-wal is missing" in caplog.text and "--journal-recover: starting" in caplog.text


async def test_a_damaged_wal_is_refused_and_named(tmp_path: Path) -> None:
    from latentwire.hub import JournalError

    path = _crash_image(tmp_path)
    wal = Path(f"{path}-wal")
    data = bytearray(wal.read_bytes())
    data[32 + 24 + 100] ^= 0xFF  # a flipped bit in the first frame's page
    wal.write_bytes(data)
    with pytest.raises(JournalError, match=r"journal.db-wal is damaged: frame 1 fails its checks, and \d+ "
                                           r"committed transactions after it would be dropped\. Put back"):
        await _restored(path)
    assert wal.read_bytes() == data  # the evidence is left as it was
    assert await _restored(path, recover=True) == 0


async def test_a_torn_last_frame_is_not_taken_for_damage(tmp_path: Path) -> None:
    path = _crash_image(tmp_path)
    wal = Path(f"{path}-wal")
    wal.write_bytes(wal.read_bytes()[:-1000])  # a write cut short by a power loss: never acknowledged
    assert await _restored(path) == 19  # SQLite drops that transaction, and so it should


async def test_the_wal_is_checkpointed_while_the_hub_runs(tmp_path: Path) -> None:
    path = _crash_image(tmp_path, checkpoint_interval=0.1, linger=1.5)
    Path(f"{path}-wal").unlink()
    assert await _restored(path, recover=True) == 20  # the main file alone had them


def test_hub_journal_recover_flag_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from latentwire.hub.options import add_arguments

    monkeypatch.setenv("LATENTWIRE_HUB_JOURNAL_RECOVER", "true")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).journal_recover is True
    monkeypatch.delenv("LATENTWIRE_HUB_JOURNAL_RECOVER")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).journal_recover is False
    assert parser.parse_args(["--journal-recover"]).journal_recover is True


def test_the_daemon_refuses_a_journal_without_its_wal(tmp_path: Path) -> None:
    path = _crash_image(tmp_path)
    Path(f"{path}-wal").unlink()
    proc = _hub_command("--port", "0", "--journal", str(path))
    assert proc.returncode == 2
    [line] = proc.stdout.splitlines()
    assert line.startswith(f"latentwire hub: journal {path}: the hub did not stop cleanly and "
                           "journal.db-wal is missing")


# -- 6. a health Watch open at shutdown ends cleanly --------------------------------------------------


async def test_an_open_health_watch_ends_cleanly_when_the_daemon_stops() -> None:
    import signal

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWIRE_")}
    argv = [sys.executable, "-m", "latentwire.cli", "hub", "--port", "0", "--drain-timeout", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line.startswith("latentwire hub listening on grpc://"), line
        async with grpc.aio.insecure_channel(line.rsplit("://", 1)[1].strip()) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="latentwire.v1.Bus"))
            seen = [(await asyncio.wait_for(watch.read(), 5)).status]
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                while (response := await watch.read()) is not grpc.aio.EOF:
                    seen.append(response.status)
            status = health_pb2.HealthCheckResponse
            assert seen == [status.SERVING, status.NOT_SERVING]
            assert await watch.code() == grpc.StatusCode.OK  # the stream ended, it was not cut
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0
        assert "Traceback" not in err and "CancelledError" not in err, err
    finally:
        proc.kill()


async def test_metric_names_end_in_their_unit_and_have_no_created_series() -> None:
    import urllib.request

    from latentwire.hub.metrics import HubMetrics

    hub = Hub()
    metrics = HubMetrics(hub)
    port = await metrics.start(0)
    try:
        envelope = pb.Envelope(id="m", topic="robots/cam")
        metrics.on_publish(envelope, 100)
        deliver = pb.Deliver(seq=1, envelope=envelope, redelivered=True)
        metrics.on_send([(pb.Frame(deliver=deliver), b"x" * 64)])
        metrics.on_reject(pb.NOT_FOUND)

        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return response.read().decode()

        names = {line.split("{")[0].split(" ")[0] for line in (await asyncio.to_thread(get)).splitlines()
                 if line.startswith("latentwire_")}
    finally:
        await metrics.stop()
    assert not [n for n in names if n.endswith("_created")]
    assert {"latentwire_hub_messages_in_bytes_total", "latentwire_hub_messages_out_bytes_total",
            "latentwire_hub_publishes_unacked_bytes", "latentwire_hub_held_bytes"} <= names
    assert [n for n in names if "bytes" in n and not n.endswith(("_bytes", "_bytes_total"))] == []


@pytest.mark.parametrize("token", ["7-chars", "fifteen-chars!!", ""])
def test_hash_token_refuses_a_short_token(token: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "latentwire.cli", "hash-token"], input=f"{token}\n",
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (f"latentwire hash-token: the token has {len(token)} characters; use at "
                                   "least 16 (`latentwire hash-token --new` makes a random one)")
