"""``latentwire demo``: four agents in one process exchange text and latents, with a transcript.

The agents (all `Agent` subclasses, run by one `Runtime`):

* ``camera`` publishes a frame latent on ``vision/cam0/frame`` and a text caption on
  ``vision/cam0/caption``, then asks ``encoder`` (a request with the frame as a latent) for
  hub tokens;
* ``encoder`` answers each request with a latent (``@on_direct``: the return value is the reply);
* ``watcher`` takes frames only (``vision/+/frame``) and sends ``camera`` a direct text note;
* ``narrator`` hears everything under ``vision/#``, frames and captions alike.

Every latent travels with a SHA-256 of its bytes in a header; receivers recompute it, so a
line ending in ``bit-exact`` proves the bytes arrived unchanged. The encoder's reply is checked
against the same encoding done locally. Later issues swap these toy agents for VLM agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import statistics
import time
from collections import Counter

import numpy as np

from . import DTYPES, Agent, Latent, LatentwireError, Message, Runtime, on, on_direct
from ._connect import DEFAULT_URL, URL_ENV

CHECKSUM_HEADER = "sha256"
FRAME_SHAPE = (16, 64)  # 16 patch vectors of width 64
TOKENS = 4  # the encoder pools a frame into this many hub tokens
ROUND_TIMEOUT = 5.0  # seconds to wait for a round's deliveries before calling them missing
CAPTIONS = ("a red cube left of a blue ball", "the ball rolls behind the cube",
            "only the cube is visible", "the ball comes back on the right")


def checksum(latent: Latent) -> str:
    """A short SHA-256 of a latent's wire bytes."""
    return hashlib.sha256(latent.tobytes()).hexdigest()[:16]


def make_frame(index: int) -> np.ndarray:
    """The camera's frame ``index``: deterministic, so a rerun prints the same checksums."""
    return np.random.default_rng(index).standard_normal(FRAME_SHAPE, dtype=np.float32)


def encode_frame(frame: np.ndarray) -> Latent:
    """Pool a frame into ``TOKENS`` bfloat16 hub tokens through a fixed projection."""
    projection = np.random.default_rng(0).standard_normal((FRAME_SHAPE[1],) * 2, dtype=np.float32)
    pooled = frame.reshape(TOKENS, -1, FRAME_SHAPE[1]).mean(axis=1)  # (TOKENS, 64)
    tokens = (pooled @ projection / 8).astype(DTYPES["bfloat16"])  # (TOKENS, 64)
    return Latent(tokens, space="hub", family="demo")


def describe(latent: Latent) -> str:
    """``latent float32 (16, 64) 4096 B``: what a transcript line says about a latent."""
    return f"latent {latent.dtype} {latent.shape} {latent.nbytes} B"


class Ledger:
    """What the agents saw: prints each event as a transcript line and counts it by kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.checked = 0  # latents whose checksum matched
        self.problems: list[str] = []
        self._changed = asyncio.Event()

    def record(self, kind: str, who: str, arrow: str, where: str, what: str,
               exact: bool | None = None) -> None:
        """Print one line (``who arrow where  what``) and count it.

        ``exact`` is the outcome of a checksum check (None: nothing was checked); a failed
        check is kept as a problem.
        """
        print(f"  {who:<8} {arrow} {where:<20} {what}", flush=True)
        self.counts[kind] += 1
        if exact is True:
            self.checked += 1
        elif exact is False:
            self.problems.append(f"{who}: {what}")
        self._changed.set()

    def missing(self, expected: Counter[str]) -> list[str]:
        """The kinds that have not reached their expected count, as ``kind: got of want``."""
        return [f"{kind}: {self.counts[kind]} of {n}"
                for kind, n in expected.items() if self.counts[kind] < n]

    async def wait_for(self, expected: Counter[str], timeout: float) -> list[str]:
        """Wait until every kind reached its count; return what is still missing after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.missing(expected):
                    self._changed.clear()
                    await self._changed.wait()
        return self.missing(expected)


def check_latent(latent: Latent, expected_digest: str | None) -> tuple[str, bool]:
    """A transcript description of a received latent, and whether its checksum is the expected one."""
    digest = checksum(latent)
    exact = digest == expected_digest
    verdict = "bit-exact" if exact else f"MISMATCH, expected {expected_digest}"
    return f"{describe(latent)} sha256 {digest} {verdict}", exact


class DemoAgent(Agent):
    """An agent that writes what it sees into the shared `Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger


class Camera(DemoAgent):
    """Publishes frames and captions, and asks the encoder for hub tokens."""

    name = "camera"

    async def shoot(self, index: int) -> float:
        """One round: publish frame and caption, then request tokens; returns the request's RTT in s."""
        frame = Latent(make_frame(index))
        digest = checksum(frame)
        headers = {CHECKSUM_HEADER: digest}
        # Lines for what is sent come first: subscribers may print theirs before publish() returns.
        self.ledger.record("sent", self.id, "->", "vision/cam0/frame", f"{describe(frame)} sha256 {digest}")
        await self.bus.publish("vision/cam0/frame", latent=frame, headers=headers)
        caption = CAPTIONS[index % len(CAPTIONS)]
        self.ledger.record("sent", self.id, "->", "vision/cam0/caption", f"text {caption!r}")
        await self.bus.publish("vision/cam0/caption", caption)

        self.ledger.record("asked", self.id, "=>", "encoder (request)", f"{describe(frame)} sha256 {digest}")
        start = time.perf_counter()
        reply = await self.bus.request("encoder", latent=frame, headers=headers, timeout=ROUND_TIMEOUT)
        rtt = time.perf_counter() - start
        # The encoder is deterministic, so the reply must equal the same encoding done here.
        what, exact = check_latent(reply.latent, checksum(encode_frame(frame.numpy())))
        self.ledger.record("reply", self.id, "<=", "encoder (reply)",
                           f"{what}, space={reply.latent.space}, rtt {rtt * 1000:.2f} ms", exact)
        return rtt

    @on_direct
    async def note(self, msg: Message) -> None:
        """Notes the watcher sends directly to the camera."""
        self.ledger.record("note", self.id, "<=", f"{msg.sender} (direct)", f"text {msg.text!r}")


class Encoder(DemoAgent):
    """Answers a request carrying a frame latent with the frame's hub tokens (a latent)."""

    name = "encoder"

    @on_direct
    async def encode(self, msg: Message) -> Latent:
        """The reply to a request is this handler's return value."""
        what, exact = check_latent(msg.latent, msg.headers.get(CHECKSUM_HEADER))
        self.ledger.record("request", self.id, "<=", f"{msg.sender} (request)", what, exact)
        return encode_frame(msg.latent.numpy())


class Watcher(DemoAgent):
    """Sees frames from any camera and tells the sender what it saw, directly."""

    name = "watcher"

    @on("vision/+/frame")
    async def frame(self, msg: Message) -> None:
        """Check a frame's bytes, then send its sender a direct text note."""
        what, exact = check_latent(msg.latent, msg.headers.get(CHECKSUM_HEADER))
        self.ledger.record("frame", self.id, "<-", msg.topic, f"from {msg.sender}: {what}", exact)
        norm = float(np.linalg.norm(msg.latent.numpy()))
        frame_id = msg.headers.get(CHECKSUM_HEADER, "?")[:8]  # the sender's name for this frame
        await self.bus.send(msg.sender, f"frame {frame_id} seen, norm {norm:.1f}")


class Narrator(DemoAgent):
    """Hears everything under ``vision/#``: latents and text alike."""

    name = "narrator"

    @on("vision/#")
    async def hear(self, msg: Message) -> None:
        """Log whatever arrives, latent or text."""
        if msg.latent is not None:
            what, exact = check_latent(msg.latent, msg.headers.get(CHECKSUM_HEADER))
        else:
            what, exact = f"text {msg.text!r}", None
        self.ledger.record("heard", self.id, "<-", msg.topic, f"from {msg.sender}: {what}", exact)


async def run_demo(url: str | None, rounds: int = 3) -> int:
    """Run the demo on ``url`` (default ``$LATENTWIRE_URL`` or ``inproc://``); 0 when all arrived."""
    if rounds < 1:
        print(f"latentwire demo: --rounds must be at least 1, got {rounds}")
        return 2
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    where = "embedded hub in this process, no server" if url.startswith("inproc:") else "hub daemon"
    ledger = Ledger()
    camera = Camera(ledger)
    runtime = Runtime(url, connect_timeout=5.0).add(
        camera, Encoder(ledger), Watcher(ledger), Narrator(ledger))
    plural = "s" * (rounds != 1)
    print(f"latentwire demo on {url} ({where}): {len(runtime.agents)} agents, {rounds} round{plural}")
    print("  camera publishes vision/cam0/{frame,caption} and requests encoder; watcher subscribes "
          "vision/+/frame, narrator vision/#")
    print("  -> publish   <- received by subscription   => direct/request sent   <= direct/reply received")
    # Per round: 2 publishes by the camera, 1 frame at the watcher, 2 messages at the
    # narrator, 1 request at the encoder, its reply, and the watcher's note to the camera.
    per_round = Counter(sent=2, asked=1, frame=1, heard=2, request=1, reply=1, note=1)
    rtts: list[float] = []
    missing: list[str] = []
    started = time.perf_counter()
    try:
        async with runtime:
            for index in range(rounds):
                print(f"round {index + 1}")
                rtts.append(await camera.shoot(index))
                want = Counter({kind: n * (index + 1) for kind, n in per_round.items()})
                missing = await ledger.wait_for(want, ROUND_TIMEOUT)
                if missing:
                    break
    except LatentwireError as exc:
        print(f"latentwire demo: {type(exc).__name__}: {exc}")
        return 1
    elapsed = time.perf_counter() - started
    print(f"summary: {sum(ledger.counts.values())} events in {elapsed:.2f} s; {ledger.checked} latents "
          f"checked bit-exact; request rtt median {statistics.median(rtts) * 1000:.2f} ms "
          f"(first {rtts[0] * 1000:.2f} ms)")
    if missing or ledger.problems:
        for line in [*missing, *ledger.problems]:
            print(f"  FAILED {line}")
        print("demo FAILED")
        return 1
    print("demo OK: every message arrived, every latent bit-exact")
    return 0
