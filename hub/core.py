"""The hub: sessions, routing, flow control and redelivery, independent of any transport.

A transport hands the hub a `Connection` (`Hub.spawn_connection`); the hub runs the protocol
over it. Per connection three tasks cooperate:

* the reader parses frames; it never waits on another session, so acks and subscriptions
  are always processed, even while this client's publishes are held back;
* the router routes this client's publishes, in order, into the target sessions' queues; a
  full queue makes it wait (so the client's publish window fills and the producer waits),
  and a publish is acked only once every target holds it;
* the pump sends what is due to this client: welcome, acks, and deliveries while the client
  has receive credits (``receive_window`` unacked deliveries).

Memory is bounded: a session holds at most ``session_max_bytes`` (queued plus unacked) and
``session_max_messages``; a client has at most ``publish_window`` publishes in flight.
A session outlives its connection for ``session_expiry`` seconds; unacked deliveries are
redelivered, with the same sequence number, when the agent reconnects.

A subscription group (`SharedGroup`: a group name and one filter, shared by the sessions of
several replicas) has its own bounded queue; each message in it goes to one live member with a
free receive credit, the least busy one (ties in turn). A member whose connection drops gives
its unacked and still queued group messages back, and they go to another live member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

from latentwire._codes import code_for
from latentwire._message import check_envelope, is_expired, message_size
from latentwire._proto import bus_pb2 as pb
from latentwire._topics import AGENT_ID, validate_filter, validate_group
from latentwire._tracing import hub_span
from latentwire._wire import Oversize, Payload
from latentwire.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    InvalidMessage,
    LimitExceeded,
    MessageTooLarge,
    ProtocolError,
    Unavailable,
    UnknownAgent,
)
from latentwire.transports.base import Connection

from .auth import Guard, LoginThrottle, Policy
from .journal import Journal, JournalError, NullJournal, SavedSession
from .routing import TopicTree

log = logging.getLogger("latentwire.hub")

MiB = 1024 * 1024
# Deliveries are sent in batches of about this many bytes, so one huge backlog does not
# become one huge write.
BATCH_BYTES = 4 * MiB
# Payload bytes a connection's decoder may reassemble before its hello is accepted. A hello
# carries none, so a chunked frame from a client nobody admitted yet is refused from its
# header: nothing is buffered for it.
HELLO_MAX_PAYLOAD = 0


@dataclass
class HubConfig:
    """Limits and timings of a hub; every size is in bytes and every time in seconds."""

    max_message_bytes: int = 256 * MiB  # largest message accepted (header + payload)
    max_frame_bytes: int = 4 * MiB  # largest transport message; bigger frames are chunked
    publish_window: int = 256  # unacked publishes a client may have in flight
    publish_window_bytes: int = 16 * MiB  # ... and their payload bytes (one always fits)
    session_max_bytes: int = 64 * MiB  # queued + unacked bytes per session
    session_max_messages: int = 4096  # queued + unacked messages per session
    max_receive_window: int = 1024  # cap on the receive window a client may ask for
    session_expiry: float = 60.0  # how long a disconnected session is kept for resume
    hello_timeout: float = 10.0  # a new connection must say hello within this

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"hub setting {f.name} must be a positive number, got {value!r}")
        if self.max_frame_bytes < 64 * 1024:
            raise ConfigError(f"max_frame_bytes must be at least 65536, got {self.max_frame_bytes}")


@dataclass
class HubStats:
    """Counters since the hub started (read by metrics and benchmarks)."""

    connections: int = 0
    published: int = 0
    delivered: int = 0
    rejected: int = 0
    expired: int = 0
    malformed: int = 0


class NullMetrics:
    """The hub's metrics while none are attached: the calls `HubMetrics` answers, doing nothing
    (``HubMetrics(hub)`` replaces it)."""

    def on_publish(self, env: pb.Envelope, size: int) -> None:
        """A message was accepted and routed."""

    def on_reject(self, code: int) -> None:
        """A publish was refused with wire error ``code``."""

    def on_send(self, frames: list[tuple[pb.Frame, Payload]]) -> None:
        """Frames are about to go to a client."""


class NullTraffic:
    """The hub's operator counters while none are attached (``TrafficStats.attach(hub)``,
    hub/stats.py, replaces it): the one call the core makes, doing nothing."""

    def on_route(self, env: pb.Envelope, payload: Payload, size: int) -> None:
        """A publish of ``size`` bytes is being routed."""


# A member's shared subscription as the journal stores it with the session's filters (MQTT's
# spelling: no filter or agent id can start with '$', so it never clashes), and the agent name
# of a group's own journal row.
SHARE_PREFIX = "$share/"


def _share_name(group: str, pattern: str) -> str:
    return f"{SHARE_PREFIX}{group}/{pattern}"


def _split_share(name: str) -> tuple[str, str] | None:
    """(group, filter) of a name made by `_share_name`, else None."""
    if not name.startswith(SHARE_PREFIX):
        return None
    group, _, pattern = name[len(SHARE_PREFIX):].partition("/")
    return group, pattern


def _has_room(config: HubConfig, messages: int, nbytes: int, size: int) -> bool:
    """Whether a queue holding ``messages`` (``nbytes``) takes one more of ``size`` bytes."""
    if messages == 0:
        return True  # one message always fits, however large, or it could never pass
    return nbytes + size <= config.session_max_bytes and messages < config.session_max_messages


@dataclass(slots=True)
class _Delivery:
    envelope: pb.Envelope
    payload: Payload
    size: int
    seq: int
    redelivered: bool = False
    group: SharedGroup | None = None  # handed to this member by a group (which holds its bytes)
    group_seq: int = 0  # its sequence number in that group


@dataclass(eq=False)
class Session:
    """What the hub keeps for one agent: subscriptions, its queue, and unacked deliveries."""

    agent: str
    config: HubConfig
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    filters: set[str] = field(default_factory=set)
    queue: deque[_Delivery] = field(default_factory=deque)
    inflight: dict[int, _Delivery] = field(default_factory=dict)
    held_bytes: int = 0
    next_seq: int = 1
    window: int = 64
    conn: Connection | None = None
    closed: bool = False
    expiry: asyncio.TimerHandle | None = None
    # Outgoing control traffic of the attached connection.
    control: list[tuple[pb.Frame, bytes]] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    rejections: list[pb.Rejection] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    space: asyncio.Event = field(default_factory=asyncio.Event)
    guard: Guard | None = None  # what this agent may do (hub/auth.py); set at hello
    ingress: _Ingress | None = None  # the attached connection's unacked publishes (for metrics)
    connected_at: float = 0.0  # Unix time of the current (or last) connection's hello
    groups: set[SharedGroup] = field(default_factory=set)  # subscription groups it is a member of

    @property
    def held_messages(self) -> int:
        return len(self.queue) + len(self.inflight)

    def payload_cap(self) -> int:
        """The largest payload its connection reassembles: the hub's message cap, or the
        agent's own limit when lower (a larger payload is refused from its header, unstored)."""
        own = self.guard.limits.max_message_bytes if self.guard is not None else None
        return min(self.config.max_message_bytes, own) if own else self.config.max_message_bytes

    def _has_room(self, size: int) -> bool:
        return _has_room(self.config, self.held_messages, self.held_bytes, size)

    @property
    def subscriptions(self) -> set[str]:
        """Its filters, with its group subscriptions spelled ``$share/<group>/<filter>``."""
        return self.filters | {_share_name(g.name, g.filter) for g in self.groups}

    @property
    def credit(self) -> int:
        """Deliveries a group may still hand this session: its receive window less what it has
        queued and in flight (0 while disconnected)."""
        return self.window - self.held_messages if self.conn is not None else 0

    def take_from_group(self, group: SharedGroup, d: _Delivery) -> int:
        """Queue a group's delivery for this member; its sequence number here."""
        seq = self.next_seq
        self.next_seq += 1
        self.queue.append(_Delivery(d.envelope, d.payload, d.size, seq, d.redelivered, group, d.seq))
        self.wake.set()
        return seq

    def give_back(self, group: SharedGroup | None = None) -> None:
        """Return the queued and unacked deliveries of ``group`` (None: every group) to their
        groups, which hand them to other members; those already sent count as redelivered."""
        def mine(d: _Delivery) -> bool:
            return d.group is not None and (group is None or d.group is group)

        sent = [d for d in self.inflight.values() if mine(d)]
        unsent = [d for d in self.queue if mine(d)]
        if not sent and not unsent:
            return
        for d in sent:
            del self.inflight[d.seq]
        self.queue = deque(d for d in self.queue if not mine(d))
        for owner in {d.group for d in sent + unsent}:
            owner.take_back([d.group_seq for d in sent if d.group is owner],
                            [d.group_seq for d in unsent if d.group is owner])
        self.wake.set()

    async def enqueue(self, envelope: pb.Envelope, payload: Payload, size: int) -> int:
        """Queue a delivery, waiting while the session is full; its sequence number, or 0 if
        the session ended."""
        while not self.closed and not self._has_room(size):
            self.space.clear()
            await self.space.wait()
        if self.closed:
            return 0
        seq = self.next_seq
        self.queue.append(_Delivery(envelope, payload, size, seq))
        self.next_seq += 1
        self.held_bytes += size
        self.wake.set()
        return seq

    def _release(self, delivery: _Delivery, acked: bool = False) -> None:
        if delivery.group is not None:
            delivery.group.done(delivery.group_seq, acked)
            return
        self.held_bytes -= delivery.size
        self.space.set()

    def ack_deliveries(self, seqs: list[int]) -> None:
        """The client acknowledged these deliveries: free their memory and credits."""
        for seq in seqs:
            d = self.inflight.pop(seq, None)
            if d is not None:
                self._release(d, acked=True)
        self.wake.set()

    def requeue_inflight(self) -> None:
        """Put unacked deliveries back at the front, in order, to be redelivered."""
        for seq in sorted(self.inflight, reverse=True):
            d = self.inflight.pop(seq)
            d.redelivered = True
            self.queue.appendleft(d)

    def send_control(self, frame: pb.Frame) -> None:
        self.control.append((frame, b""))
        self.wake.set()

    def ack_publish(self, seq: int) -> None:
        self.acks.append(seq)
        self.wake.set()

    def reject_publish(self, seq: int, exc: BaseException) -> None:
        self.rejections.append(pb.Rejection(seq=seq, code=code_for(exc), reason=str(exc),
                                            limit=getattr(exc, "limit", 0)))
        self.wake.set()

    def take_outgoing(self, stats: HubStats) -> list[tuple[pb.Frame, Payload]]:
        """Everything due to the client now: control frames, coalesced acks, deliveries."""
        frames: list[tuple[pb.Frame, Payload]] = self.control
        self.control = []
        if self.acks or self.rejections:
            ack = pb.Ack(seqs=self.acks, rejections=self.rejections)
            frames.append((pb.Frame(publish_ack=ack), b""))
            self.acks, self.rejections = [], []
        budget = BATCH_BYTES
        now = time.time_ns()
        while self.queue and len(self.inflight) < self.window and budget > 0:
            d = self.queue.popleft()
            if is_expired(d.envelope, now):
                stats.expired += 1
                self._release(d)
                continue
            self.inflight[d.seq] = d
            deliver = pb.Deliver(seq=d.seq, envelope=d.envelope, redelivered=d.redelivered,
                                 group=d.group.name if d.group is not None else "")
            frames.append((pb.Frame(deliver=deliver), d.payload))
            budget -= d.size
            stats.delivered += 1
        if self.queue and len(self.inflight) < self.window:
            self.wake.set()  # more is deliverable: come round again after this batch
        return frames


class SharedGroup:
    """A subscription group: the sessions subscribed to ``filter`` under the group ``name``
    (replicas of one role), which split its messages.

    Routing queues a message here once (bounded like a session's queue: a full group makes the
    router wait). `dispatch` hands each queued message to one live member with a free receive
    credit, the least busy one (fewest queued and unacked messages; ties go round in turn): a
    slow or stalled replica is not given more than its window while others are idle, which
    round robin alone would do. The group holds a message's bytes until a member acks it; a
    member that leaves or loses its connection gives its share back (`take_back`) and it goes
    to another live member. With no live member, messages wait here for one.
    """

    def __init__(self, name: str, pattern: str, config: HubConfig, journal: Journal | NullJournal,
                 *, id: str | None = None, next_seq: int = 1) -> None:
        self.name = name
        self.filter = pattern
        self.config = config
        self.journal = journal
        self.id = id or uuid.uuid4().hex  # its rows in the journal
        self.members: list[Session] = []
        self.queue: deque[_Delivery] = deque()  # not yet handed to a member
        self.inflight: dict[int, _Delivery] = {}  # handed to a member, not yet acked, by group seq
        self.held_bytes = 0
        self.next_seq = next_seq
        self.closed = False
        self.expiry: asyncio.TimerHandle | None = None  # set while it has no members
        self.space = asyncio.Event()
        self._turn = 0

    def __repr__(self) -> str:
        return f"<SharedGroup {self.name!r} {self.filter!r} members={len(self.members)}>"

    @property
    def agent(self) -> str:
        """The name of its journal row (not an agent id: those never start with '$')."""
        return _share_name(self.name, self.filter)

    @property
    def held_messages(self) -> int:
        return len(self.queue) + len(self.inflight)

    async def enqueue(self, envelope: pb.Envelope, payload: Payload, size: int) -> int:
        """Queue a message for the group, waiting while it is full; its group sequence number,
        or 0 if the group was dropped."""
        while not self.closed and not _has_room(self.config, self.held_messages, self.held_bytes, size):
            self.space.clear()
            await self.space.wait()
        if self.closed:
            return 0
        seq = self.next_seq
        self.next_seq += 1
        self.queue.append(_Delivery(envelope, payload, size, seq))
        self.held_bytes += size
        self.dispatch()
        return seq

    def dispatch(self) -> None:
        """Hand queued messages to live members while one has a free credit."""
        while self.queue and not self.closed:
            member = self._pick()
            if member is None:
                return
            d = self.queue.popleft()
            self.inflight[d.seq] = d
            self.journal.seq_used(member.id, member.take_from_group(self, d))

    def _pick(self) -> Session | None:
        best: Session | None = None
        count = len(self.members)
        for i in range(count):
            member = self.members[(self._turn + i) % count]
            if member.credit > 0 and (best is None or member.held_messages < best.held_messages):
                best = member
        if best is not None:
            self._turn = (self.members.index(best) + 1) % count
        return best

    def done(self, seq: int, acked: bool) -> None:
        """A member acked (or dropped, expired) delivery ``seq``: free its room."""
        d = self.inflight.pop(seq, None)
        if d is None:
            return
        self.held_bytes -= d.size
        if acked:
            self.journal.ack(self.id, [seq])
        self.space.set()
        self.dispatch()

    def take_back(self, sent: list[int], unsent: list[int]) -> None:
        """Deliveries a member will not ack go back to the front, in order: ``sent`` ones
        marked redelivered; then they go to other live members."""
        for seq in sorted(sent + unsent, reverse=True):
            d = self.inflight.pop(seq, None)
            if d is not None:
                d.redelivered = d.redelivered or seq in sent
                self.queue.appendleft(d)
        self.dispatch()

    def add_member(self, session: Session) -> None:
        """``session`` joins (again); it is handed messages while connected."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if session not in self.members:
            self.members.append(session)
            session.groups.add(self)

    def remove_member(self, session: Session) -> None:
        """``session`` leaves; its share goes to the other members."""
        if session in self.members:
            self.members.remove(session)
        session.groups.discard(self)
        session.give_back(self)
        self.dispatch()

    def close(self) -> None:
        """Drop the group and what it holds."""
        self.closed = True
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.queue.clear()
        self.inflight.clear()
        self.held_bytes = 0
        self.space.set()  # producers waiting for room see the group is gone


class _Ingress:
    """One connection's publishes between the reader and the router, bounded by the credits
    the hub granted: a client that ignores its window is refused, never buffered."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.messages = 0
        self.nbytes = 0
        self._queue: deque[tuple[int, pb.Envelope, Payload]] = deque()
        self._ready = asyncio.Event()

    def check_credit(self, size: int) -> None:
        if self.messages and (self.messages >= self.config.publish_window
                              or self.nbytes + size > self.config.publish_window_bytes):
            # RESOURCE_EXHAUSTED on the wire: the protocol's code for a limit, not a bad message.
            raise LimitExceeded(
                f"publish window exceeded: {self.messages} publishes ({self.nbytes} bytes) unacked, "
                f"window is {self.config.publish_window} ({self.config.publish_window_bytes} bytes); "
                "wait for acks")

    def put(self, seq: int, env: pb.Envelope, payload: Payload) -> None:
        self.messages += 1
        self.nbytes += len(payload)
        self._queue.append((seq, env, payload))
        self._ready.set()

    async def get(self) -> tuple[int, pb.Envelope, Payload]:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def done(self, size: int) -> None:
        self.messages -= 1
        self.nbytes -= size


class Hub:
    """Routes messages between agent sessions over any number of connections."""

    def __init__(self, config: HubConfig | None = None, *, name: str = "hub",
                 journal: Journal | None = None, policy: Policy | None = None) -> None:
        """``journal``: persist messages and sessions there (see `latentwire.hub.journal`);
        the hub then starts with the sessions it kept, so create it in the event loop."""
        self.config = config or HubConfig()
        self.policy = policy or Policy()  # tokens, ACLs, per-session limits (hub/auth.py)
        self.logins = LoginThrottle()  # token checks in turn, per peer address; outlives reloads
        self.metrics: Any = NullMetrics()  # a HubMetrics once attached (hub/metrics.py)
        self.traffic: Any = NullTraffic()  # a TrafficStats once attached (hub/stats.py: admin, dashboard)
        self.name = name
        self.id = uuid.uuid4().hex[:12]
        self.stats = HubStats()
        self.sessions: dict[str, Session] = {}
        self.groups: dict[tuple[str, str], SharedGroup] = {}  # by (group name, filter)
        self.draining = False
        self.closed = False
        self._tree: TopicTree[Session | SharedGroup] = TopicTree()
        self._tasks: set[asyncio.Task] = set()
        self._connections: set[Connection] = set()
        # Without a journal, a null one: the core journals unconditionally and it stores nothing.
        self.journal: Journal | NullJournal = journal if journal is not None else NullJournal()
        # Groups first, so that restored members join the groups with their messages.
        for saved in sorted(self.journal.restored, key=lambda s: _split_share(s.agent) is None):
            self._restore(saved)

    # -- connections -------------------------------------------------------------------

    def spawn_connection(self, conn: Connection) -> asyncio.Task:
        """Serve a new connection in the background."""
        task = asyncio.create_task(self.serve_connection(conn), name=f"latentwire-hub[{self.name}].conn")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def serve_connection(self, conn: Connection) -> None:
        """Run the protocol over ``conn`` until it ends."""
        self._connections.add(conn)
        session: Session | None = None
        bye = False
        try:
            session, pending = await self._handshake(conn)
            if session is None:
                return
            ingress = session.ingress = _Ingress(self.config)
            async with asyncio.TaskGroup() as tg:
                pump = tg.create_task(self._pump(session, conn), name=f"latentwire-hub[{session.agent}].pump")
                router = tg.create_task(self._route_loop(session, ingress),
                                        name=f"latentwire-hub[{session.agent}].router")
                bye = await self._read_loop(session, conn, ingress, pending)
                pump.cancel()
                router.cancel()
        except* (ConnectError, asyncio.TimeoutError):
            pass
        except* ProtocolError as eg:
            log.warning("closing connection: %s", eg.exceptions[0])
        except* Exception:  # a bug in one connection must not take the hub down
            log.exception("connection of %r failed", session.agent if session else "?")
        finally:
            self._connections.discard(conn)
            if session is not None:
                self._detach(session, conn, bye)
            await conn.aclose()

    async def _handshake(self, conn: Connection) -> tuple[Session | None, list]:
        try:
            batch = await asyncio.wait_for(conn.receive(), self.config.hello_timeout)
        except ProtocolError as exc:
            self.stats.malformed += 1
            await self._refuse(conn, pb.MALFORMED, f"first frame must be hello: {exc}")
            return None, []
        frame, payload = batch[0]
        if frame.WhichOneof("kind") != "hello":
            await self._refuse(conn, pb.MALFORMED, f"first frame must be hello, got {frame.WhichOneof('kind')}")
            return None, []
        if isinstance(payload, Oversize):
            await self._refuse(conn, pb.MALFORMED, "a hello carries no payload")
            return None, []
        hello = frame.hello
        if self.draining or self.closed:
            await self._refuse(conn, pb.UNAVAILABLE, "hub is draining; reconnect later")
            return None, []
        if not AGENT_ID.fullmatch(hello.agent):
            await self._refuse(conn, pb.INVALID_ARGUMENT,
                               f"invalid agent id {hello.agent!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -, "
                               "starting with a letter or digit")
            return None, []
        filters = []
        shared: set[tuple[str, str]] = set()
        try:
            for f in hello.subscriptions:
                filters.append(validate_filter(f))
            for sub in hello.group_subscriptions:
                shared.add((validate_group(sub.group), validate_filter(sub.filter)))
        except (InvalidMessage, ConfigError) as exc:
            await self._refuse(conn, code_for(exc), str(exc))
            return None, []
        try:
            guard = await self.policy.admit(hello.agent, hello.token, logins=self.logins,
                                            peer=conn.peer_address)
            guard.check_subscribe([*filters, *(f for _, f in shared)], set())
        except (AuthError, LimitExceeded) as exc:
            log.warning("refused agent %r: %s", hello.agent, exc)
            await self._refuse(conn, code_for(exc), str(exc))
            return None, []
        session = self.sessions.get(hello.agent)
        resumed = session is not None
        if session is not None and session.conn is not None:
            if hello.session_id != session.id:
                await self._refuse(conn, pb.ALREADY_EXISTS,
                                   f"agent {hello.agent!r} is already connected to this hub")
                return None, []
            old = session.conn  # the same client reconnecting before we noticed it left
            self._detach(session, old, bye=False)
            await old.aclose()
        if session is None:
            session = Session(hello.agent, self.config)
            self.sessions[hello.agent] = session
        if session.guard is None:  # a resumed session keeps its rate budget and reply grants
            session.guard = guard
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        # The client is the source of truth for its subscriptions: a resumed session takes
        # exactly the filters the client holds now (it may have changed them while away).
        for f in session.filters - set(filters):
            self._tree.remove(f, session)
        for f in filters:
            self._tree.add(f, session)
        session.filters = set(filters)
        for group in list(session.groups):
            if (group.name, group.filter) not in shared:
                self._leave_group(session, group)
        for name, pattern in shared:
            self._join_group(session, name, pattern)
        self._save_session(session)
        session.conn = conn
        conn.max_payload = session.payload_cap()  # admitted: its own size limit, not the hello's
        session.connected_at = time.time()
        session.window = min(hello.receive_window or 64, self.config.max_receive_window)
        session.control, session.acks, session.rejections = [], [], []
        session.wake = asyncio.Event()
        self.stats.connections += 1
        welcome = pb.Welcome(
            session_id=session.id,
            resumed=resumed,
            publish_window=self.config.publish_window,
            publish_window_bytes=self.config.publish_window_bytes,
            max_message_bytes=self.config.max_message_bytes,
            max_frame_bytes=self.config.max_frame_bytes,
            hub_id=self.id,
            groups=True,
        )
        session.send_control(pb.Frame(welcome=welcome))
        for group in session.groups:  # after the welcome: its share of what waits
            group.dispatch()
        log.debug("session %s for %r %s", session.id, session.agent, "resumed" if resumed else "opened")
        return session, batch[1:]

    async def _refuse(self, conn: Connection, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectError):
            await conn.send([(pb.Frame(error=pb.Error(code=code, reason=reason)), b"")])
        conn.refused(code, reason)

    def _detach(self, session: Session, conn: Connection, bye: bool) -> None:
        if session.conn is not conn:
            return  # already taken over by a newer connection
        session.conn = None
        session.give_back()  # a group's messages go to its other members, not wait for this one
        session.requeue_inflight()
        if bye or self.closed:
            self._drop(session)
        else:
            loop = asyncio.get_running_loop()
            session.expiry = loop.call_later(self.config.session_expiry, self._drop, session)

    def _drop(self, session: Session) -> None:
        if not self.closed:
            self.journal.forget_session(session.id)  # on shutdown sessions stay for the restart
        if self.sessions.get(session.agent) is session:
            del self.sessions[session.agent]
        for f in session.filters:
            self._tree.remove(f, session)
        session.filters.clear()
        for group in list(session.groups):
            self._leave_group(session, group)
        session.closed = True
        session.queue.clear()
        session.inflight.clear()
        session.held_bytes = 0
        session.space.set()  # producers waiting for room see the session is gone

    # -- per-connection tasks -----------------------------------------------------------

    async def _read_loop(self, session: Session, conn: Connection, ingress: _Ingress,
                         pending: list) -> bool:
        """Handle the client's frames; return True when it said bye."""
        while True:
            for frame, payload in pending:
                kind = frame.WhichOneof("kind")
                if kind == "publish":
                    self._accept_publish(session, frame.publish, payload, ingress)
                elif kind == "delivery_ack":
                    # A group's deliveries are acked under the group's id (Session._release).
                    session.ack_deliveries(list(frame.delivery_ack.seqs))
                    self.journal.ack(session.id, frame.delivery_ack.seqs)
                elif kind == "subscribe":
                    self._subscribe(session, frame.subscribe, add=True)
                elif kind == "unsubscribe":
                    self._subscribe(session, frame.unsubscribe, add=False)
                elif kind == "bye":
                    return True
                else:
                    self.stats.malformed += 1
                    session.send_control(pb.Frame(error=pb.Error(
                        code=pb.MALFORMED, reason=f"unexpected {kind or 'empty'} frame from a client")))
            try:
                pending = await conn.receive()
            except ProtocolError as exc:
                # A malformed message: say so and go on; the rest of the stream is fine.
                self.stats.malformed += 1
                log.warning("malformed frame from %r: %s", session.agent, exc)
                session.send_control(pb.Frame(error=pb.Error(code=pb.MALFORMED, reason=str(exc))))
                pending = []

    def _accept_publish(self, session: Session, publish: pb.Publish, payload: Payload | Oversize,
                        ingress: _Ingress) -> None:
        env = publish.envelope
        try:
            if isinstance(payload, Oversize):
                raise MessageTooLarge(payload.size, payload.limit)
            check_envelope(env, len(payload), self.config.max_message_bytes)
            ingress.check_credit(len(payload))
            session.guard.check_publish(env, len(payload))
        except (InvalidMessage, AuthError, LimitExceeded) as exc:
            self._reject(session, publish.seq, exc)
            return
        env.sender = session.agent  # the hub vouches for the sender; clients cannot forge it
        hub_span(env, self.id)  # W3C trace context: this hop joins the sender's trace
        ingress.put(publish.seq, env, payload)

    async def _route_loop(self, session: Session, ingress: _Ingress) -> None:
        while True:
            seq, env, payload = await ingress.get()
            try:
                await self._route(session, seq, env, payload)
            finally:
                ingress.done(len(payload))

    async def _route(self, session: Session, seq: int, env: pb.Envelope, payload: Payload) -> None:
        size = message_size(env, len(payload))
        if env.recipient:
            target = self.sessions.get(env.recipient)
            if target is None:
                self._reject(session, seq, UnknownAgent(env.recipient))
                return
            if env.reply_to and env.correlation_id and target.guard is not None:
                target.guard.grant_reply(session.agent, env.correlation_id)
            targets = [target]
        else:
            targets = list(self._tree.match(env.topic))
        self.traffic.on_route(env, payload, size)
        stored = self.journal.add_message(env, payload, size)
        for target in targets:
            queued = await target.enqueue(env, payload, size)
            if queued:
                stored.delivered(target.id, queued)  # before any await: its ack comes later
        if stored.pending:
            # Acked once on disk; meanwhile the next publish is routed (group commit).
            self.journal.when_synced(lambda error: self._acknowledge(session, seq, env, size, error))
        else:
            self._acknowledge(session, seq, env, size, None)

    def _acknowledge(self, session: Session, seq: int, env: pb.Envelope, size: int,
                     error: JournalError | None) -> None:
        if error is not None:
            self._reject(session, seq, Unavailable(f"not stored: {error}"))
            return
        self.stats.published += 1
        self.metrics.on_publish(env, size)
        session.ack_publish(seq)

    def _reject(self, session: Session, seq: int, exc: BaseException) -> None:
        self.stats.rejected += 1
        self.metrics.on_reject(code_for(exc))
        session.reject_publish(seq, exc)

    async def _pump(self, session: Session, conn: Connection) -> None:
        wake = session.wake
        try:
            while True:
                await wake.wait()
                wake.clear()
                frames = session.take_outgoing(self.stats)
                self.metrics.on_send(frames)
                if frames:
                    await conn.send(frames)
        except ConnectError:
            await conn.aclose()  # the reader notices and ends the connection

    def _restore(self, saved: SavedSession) -> None:
        """Rebuild a session (or a subscription group) the journal kept; a session waits
        ``session_expiry`` s for its agent."""
        share = _split_share(saved.agent)
        if share is not None:
            group = SharedGroup(*share, self.config, self.journal, id=saved.id, next_seq=saved.next_seq)
            for d in saved.deliveries:
                group.queue.append(_Delivery(d.envelope, d.payload, d.size, d.seq, redelivered=True))
                group.held_bytes += d.size
            self.groups[share] = group
            self._tree.add(group.filter, group)
            self._orphaned(group)  # until a member comes back
            return
        session = Session(saved.agent, self.config, id=saved.id, next_seq=saved.next_seq)
        for d in saved.deliveries:
            session.queue.append(_Delivery(d.envelope, d.payload, d.size, d.seq, redelivered=True))
            session.held_bytes += d.size
        for name in saved.filters:
            share = _split_share(name)
            if share is None:
                session.filters.add(name)
                self._tree.add(name, session)
            else:
                self._join_group(session, *share)
        self.sessions[session.agent] = session
        session.expiry = asyncio.get_running_loop().call_later(self.config.session_expiry, self._drop, session)

    def _subscribe(self, session: Session, request: pb.Subscribe | pb.Unsubscribe, add: bool) -> None:
        group = request.group
        try:
            checked = [validate_filter(f) for f in request.filters]
            if group:
                validate_group(group)
            if add:
                session.guard.check_subscribe(checked, session.subscriptions)
        except (InvalidMessage, ConfigError, AuthError, LimitExceeded) as exc:
            ack = pb.SubscribeAck(request_id=request.request_id, code=code_for(exc), reason=str(exc))
            session.send_control(pb.Frame(subscribe_ack=ack))
            return
        for f in checked:
            if group:
                if add:
                    self._join_group(session, group, f)
                elif (joined := self.groups.get((group, f))) is not None and session in joined.members:
                    self._leave_group(session, joined)
            elif add and f not in session.filters:
                session.filters.add(f)
                self._tree.add(f, session)
            elif not add and f in session.filters:
                session.filters.discard(f)
                self._tree.remove(f, session)
        self._save_session(session)
        session.send_control(pb.Frame(subscribe_ack=pb.SubscribeAck(request_id=request.request_id)))
        for joined in session.groups:
            joined.dispatch()

    def _save_session(self, session: Session) -> None:
        self.journal.save_session(session.id, session.agent, session.subscriptions)

    # -- subscription groups -----------------------------------------------------------

    def _join_group(self, session: Session, name: str, pattern: str) -> None:
        group = self.groups.get((name, pattern))
        if group is None:
            group = self.groups[(name, pattern)] = SharedGroup(name, pattern, self.config, self.journal)
            self._tree.add(pattern, group)
            self.journal.save_session(group.id, group.agent, [])
        group.add_member(session)

    def _leave_group(self, session: Session, group: SharedGroup) -> None:
        group.remove_member(session)
        if not group.members:
            self._orphaned(group)

    def _orphaned(self, group: SharedGroup) -> None:
        """A group without members is dropped, at once when it holds nothing, else after
        ``session_expiry`` s unless a member joins meanwhile (its messages wait for one)."""
        if self.closed or not group.held_messages:
            self._drop_group(group)
        elif group.expiry is None:
            loop = asyncio.get_running_loop()
            group.expiry = loop.call_later(self.config.session_expiry, self._drop_group, group)

    def _drop_group(self, group: SharedGroup) -> None:
        if group.members and not self.closed:
            return  # a member joined since
        if not self.closed:
            self.journal.forget_session(group.id)  # on shutdown groups stay for the restart
        if self.groups.get((group.name, group.filter)) is group:
            del self.groups[(group.name, group.filter)]
            self._tree.remove(group.filter, group)
        group.close()

    # -- lifecycle -----------------------------------------------------------------------

    def apply_policy(self, policy: Policy) -> list[str]:
        """Put ``policy`` in force for new and live sessions (`latentwire.hub.auth.reload_policy`);
        returns the agents it disconnected because they must authenticate again."""
        previous, self.policy = self.policy, policy
        cut = []
        for agent, session in list(self.sessions.items()):
            if not policy.admits_again(agent, previous):
                cut.append(agent)
                self.disconnect(agent)
            elif session.guard is not None:  # None: restored, not yet back; admitted at hello
                session.guard = policy.renew(session.guard)
                if session.conn is not None:  # its decoder takes the new size limit too
                    session.conn.max_payload = session.payload_cap()
        return cut

    def disconnect(self, agent: str) -> bool:
        """Cut an agent's connection (its session is kept for resume); for tests and admin."""
        session = self.sessions.get(agent)
        if session is None or session.conn is None:
            return False
        conn = session.conn
        self._detach(session, conn, bye=False)
        task = asyncio.ensure_future(conn.aclose())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def busy(self) -> bool:
        """Whether a connected session, or a group with a connected member, still has messages
        queued or unacked."""
        return (any(s.conn is not None and (s.queue or s.inflight) for s in self.sessions.values())
                or any(g.queue and any(m.conn is not None for m in g.members) for g in self.groups.values()))

    async def drain(self, timeout: float) -> bool:
        """Refuse new sessions, let connected clients take what is queued, then say Drain.

        Returns True when everything queued for connected clients was delivered and acked.
        """
        self.draining = True
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        drained = not self.busy()
        for session in list(self.sessions.values()):
            if session.conn is not None:
                session.send_control(pb.Frame(drain=pb.Drain(reason="hub is shutting down")))
        await asyncio.sleep(0.05)  # let the pumps send the Drain frames
        return drained

    async def aclose(self) -> None:
        """Close every connection and forget every session."""
        self.closed = True
        for conn in list(self._connections):
            await conn.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in list(self.sessions.values()):
            if session.expiry is not None:
                session.expiry.cancel()
            self._drop(session)
        for group in list(self.groups.values()):
            self._drop_group(group)
