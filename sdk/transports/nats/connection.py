"""One bus connection over NATS JetStream: the hub's half of the frame protocol, played locally.

There is no latentwire hub on this path; JetStream stores and routes. The `Bus` above speaks its
usual frames and this connection translates them:

* hello -> connect to the cluster, make sure the namespace's stream exists, refuse an agent id
  that a live bus answers for (``AlreadyConnected``), then create the agent's durable consumer
  (its session) or take up the one it left (resumed: the consumer is reset to its ack floor, so
  whatever was delivered and not acknowledged comes again, in stream order). The welcome says
  how much may be in flight and how large a message may be.
* publish -> a JetStream publish per NATS message (a large one is chunked); the PubAck is the
  publish ack, and several publishes are in flight at once (the bus's publish window bounds
  them). A direct message first checks that the recipient has a session (``UnknownAgent``).
* subscribe/unsubscribe -> an update of the consumer's filter subjects.
* deliveries -> pull requests on the consumer, sized so that at most the bus's receive window of
  messages waits unacknowledged in the bus; a message is acked to JetStream only when the
  application took it (the bus's delivery ack). The consumer's ``max_ack_pending`` is the
  window plus the chunks of one largest message, so the server never sends more.
* a group subscription (``group=``) -> the group's shared durable consumer on that filter (a
  JetStream queue group: `SubjectMap.group_consumer` names it), created by the first member
  and pulled from by every member's connection; each message goes to one of them. A member
  renews the claim on what it holds (``+WPI``) while it lives, so only a dead member's unacked
  messages come back, after ``ack_wait``, to another member; a member that unsubscribes or says
  bye hands back what its application never read (``-NAK``), so others get it at once.
* bye -> the consumer is deleted: the session is gone, and messages to the agent are refused.

Every failure of nats-py is translated in one place, `nats_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Iterator, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api

from ..._codes import code_for
from ..._message import check_envelope, is_expired
from ..._proto import bus_pb2 as pb
from ..._topics import AGENT_ID, validate_filter, validate_group
from ..._wire import Oversize
from ...errors import (
    AlreadyConnected,
    BusError,
    ConfigError,
    ConnectError,
    InvalidMessage,
    LatentwireError,
    LimitExceeded,
    MessageTooLarge,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    UnknownAgent,
)
from ..base import WireFrame
from ..hubless import HublessConnection
from .chunks import HDR_CHUNK, Arrived, Reassembler, split
from .format import decode_message, encode_message
from .settings import NatsSettings


log = logging.getLogger("latentwire.nats")

SESSION_KEY = "latentwire-session"  # consumer metadata: the session id the welcome reports
# Room for a chunk's headers within the server's max_payload (which counts headers too).
HEADER_ROOM = 8 * 1024
# A pull request lives this long; the server says so when it ends (408) and a new one follows.
PULL_EXPIRES = 30.0
# While a pull request waits, the server sends a heartbeat this often; two missed ones mean the
# request was lost (a consumer leader moved), and the connection asks again.
PULL_HEARTBEAT = 2.0
# How long a live bus has to answer for its agent id before the id counts as free.
PRESENCE_WAIT = 0.5
# A chunked message whose other chunks did not come within this time is dropped (its sender died
# mid-message and never resent it).
PARTIAL_TIMEOUT = 120.0
# Consumer reset (back to the ack floor) exists from this server version on.
RESET_SINCE = (2, 14)
# A group's deliveries are numbered apart from the agent's own (its slot shifted this far, plus
# the stream sequence), since one stream message can come through both consumers.
GROUP_SEQ_SHIFT = 48
# A group's consumer serves every member: each bounds what it holds by its pull requests, so
# the server-side cap is only a backstop (the same for every member, or each would change it).
GROUP_MAX_ACK_PENDING = 65_536
# How long a reconnected bus has to ack the group messages it read before the connection lost;
# the others (which the bus dropped unread) are then NAKed, for another member.
RELEASE_GRACE = 1.0
# How long a tls:// connection waits for a server's INFO line before leaving the check to nats-py.
PROBE_TIMEOUT = 2.0


async def require_tls(servers: Sequence[tuple[str, int]], timeout: float) -> None:
    """Refuse, before any credential is sent, a server that does not require TLS.

    nats-py upgrades a connection to TLS only when the server's first line (``INFO {...}``, the
    NATS protocol's greeting) says ``tls_required``; against any other server a ``tls://`` URL
    would send the CONNECT, credentials included, in plain text. So each server of a TLS URL is
    asked for its INFO first, on a connection of its own that is closed at once. A server that
    cannot be reached or says nothing in time (e.g. one that expects the TLS handshake first) is
    left to nats-py, which reports it."""

    async def info(host: str, port: int) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError, ValueError):
            return None
        if not line.startswith(b"INFO "):
            return None
        with contextlib.suppress(ValueError):
            return json.loads(line[5:])
        return None

    infos = await asyncio.gather(*(info(h, p) for h, p in servers))
    for (host, port), found in zip(servers, infos):
        if found is not None and not found.get("tls_required"):
            raise ConfigError(f"the NATS server at {host}:{port} does not require TLS, so a tls:// URL would "
                              "talk to it in plain text (nats-py upgrades only when the server requires "
                              "it); give the server a tls { cert_file, key_file } block, or use nats://")


@contextlib.contextmanager
def nats_errors(what: str) -> Iterator[None]:
    """Translate nats-py's exceptions into `latentwire.errors`; ``what`` says what was tried.

    The one place where a NATS failure gets its latentwire meaning (like httpx's
    ``map_httpcore_exceptions``): latentwire errors pass through, everything else is chained.
    """
    try:
        yield
    except LatentwireError:
        raise
    except nats.js.errors.NoStreamResponseError as exc:
        raise Unavailable(f"{what}: no JetStream stream answered (a stream leader is being elected, "
                          "or the stream was deleted)") from exc
    except nats.js.errors.APIError as exc:
        text = f"{what}: {exc.description} (JetStream error {exc.err_code})"
        if isinstance(exc, nats.js.errors.ServiceUnavailableError) and exc.err_code is None:
            # No responders: nothing serves the JetStream API for this account.
            raise ConnectError(f"{what}: the NATS server has no JetStream; start it with -js (or a "
                               "jetstream {} block in its config) or enable JetStream for this "
                               "account") from exc
        if exc.err_code == 10054:  # message size exceeds maximum allowed
            raise MessageTooLarge(0, 0, text) from exc
        if exc.err_code in (10023, 10027, 10047) or (
                exc.err_code == 10077 and "exceeded" in (exc.description or "")):
            # insufficient resources, too many streams, no storage; a full stream (discard new)
            raise LimitExceeded(text) from exc
        if exc.code == 403:
            raise PermissionDenied(text) from exc
        if exc.code == 404:
            raise BusError(text) from exc
        if exc.code == 503:
            raise Unavailable(text) from exc
        raise BusError(text) from exc
    except nats.errors.AuthorizationError as exc:
        raise Unauthenticated(f"{what}: the NATS server refused the credentials "
                              f"(Authorization Violation); {_FIX_CREDENTIALS}") from exc
    except nats.errors.Error as exc:
        text = str(exc)
        if "authorization violation" in text.lower() or "authentication" in text.lower():
            raise Unauthenticated(f"{what}: the NATS server refused the credentials ({text}); "
                                  f"{_FIX_CREDENTIALS}") from exc
        if "permissions violation" in text.lower():
            raise PermissionDenied(f"{what}: {text}") from exc
        if isinstance(exc, (nats.errors.BadSubjectError, nats.errors.BadHeaderError,
                            nats.errors.MaxPayloadError)):
            raise InvalidMessage(f"{what}: {text}") from exc
        raise ConnectError(f"{what}: {text or type(exc).__name__}") from exc
    except (OSError, TimeoutError) as exc:
        raise ConnectError(f"{what}: {exc or type(exc).__name__}") from exc


_FIX_CREDENTIALS = ("give the ones its authorization block expects: user:password@ or token@ in the URL, "
                    "or token=, user= and password=, nkey_seed= or creds=")
_FIX_UNREACHABLE = "check the URL's host:port list and that nats-server runs there"

# Errors nats-py reports (to error_cb) when an established connection is gone.
_CONNECTION_LOST = (nats.errors.StaleConnectionError, nats.errors.ConnectionClosedError,
                    nats.errors.ProtocolError, OSError)


def _retrieve(task: asyncio.Task) -> None:
    # An isolated task whose caller was cancelled: its outcome is of no use to anyone now.
    if not task.cancelled():
        task.exception()


@dataclass
class SessionState:
    """What one bus's connections share, kept by its transport across reconnects."""

    #: Names this bus when it answers for its agent id (a reconnect must not refuse itself).
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Deliveries handed to the bus and not yet acknowledged, by delivery seq (the stream
    #: sequence of their first NATS message) -> ack subjects. The bus may ack a delivery of the
    #: previous connection, and JetStream takes that ack on the next one.
    unacked: dict[int, list[str]] = field(default_factory=dict)
    #: Deliveries dropped because their ttl had passed.
    expired: int = 0
    #: A number per group consumer, kept across reconnects, so a group's delivery seqs stay stable.
    group_slots: dict[str, int] = field(default_factory=dict)

    def group_offset(self, consumer: str) -> int:
        """What is added to a stream sequence to make a delivery seq of this group consumer."""
        slot = self.group_slots.setdefault(consumer, len(self.group_slots) + 1)
        return slot << GROUP_SEQ_SHIFT


@dataclass(eq=False)
class _Pull:
    """A consumer this connection pulls from: the agent's own (its session) or a group's."""

    consumer: str
    group: str = ""  # "" for the agent's own consumer
    offset: int = 0  # added to stream sequences to make delivery seqs
    chunks: Reassembler = field(default_factory=Reassembler)
    subject: str = ""  # where pull requests go
    inbox: str = ""  # where the consumer answers them
    subscription: Any = None  # nats-py's subscription of the inbox
    outstanding: int = 0  # messages asked for and not yet arrived
    last_heard: float = 0.0

    def holds(self, seq: int) -> bool:
        """Whether delivery ``seq`` came through this (group) consumer."""
        return bool(self.group) and self.offset <= seq < self.offset + (1 << GROUP_SEQ_SHIFT)


class NatsConnection(HublessConnection):
    """One NATS connection that speaks the bus's frames to the `Bus` above it."""

    label = "nats"  # large messages are chunked here, onto separate stream messages (chunks.py)

    def __init__(self, settings: NatsSettings, state: SessionState, timeout: float) -> None:
        super().__init__()
        self._s = settings
        self._state = state
        self._timeout = timeout
        self._nc: NATS | None = None
        self._consumer = ""
        self.max_payload: int | None = settings.max_receive_bytes
        self._filters: set[str] = set()
        self._window = 1
        self._chunk_room = 0
        self._js: Any = None  # nats-py's JetStreamContext, after the hello
        self._session = ""
        # Whole messages beyond the receive window (the server may send more when chunks of a
        # large message are still missing, and each consumer asks for the window), with their
        # deliver frames.
        self._backlog: deque[tuple[pb.Frame, Arrived]] = deque()
        self._pulls: dict[str, _Pull] = {}  # by consumer name: the agent's own, then its groups'
        self._released: dict[int, list[str]] = {}  # group deliveries of the last connection, by seq
        self._last_error: BaseException | None = None

    # -- the Connection contract ---------------------------------------------------------------

    async def send(self, frames: Sequence[WireFrame]) -> None:
        self._check_open()
        self._raise_failure()
        await self._isolated(self._handle(frames))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self._wake.set()
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await self._isolated(nc.close())

    async def _isolated(self, coro: Any) -> Any:
        """Await ``coro`` in a task of its own, so that cancelling the caller always works.

        nats-py catches `asyncio.CancelledError` on some of its paths (flushing, requests under
        3.11's ``wait_for``); run in the bus's own task, a cancellation landing there would be
        lost and the bus would hang on close. Shielded, the caller is cancelled at once and the
        NATS call finishes (or fails) on its own.
        """
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    # -- handshake -------------------------------------------------------------------------------

    async def _hello(self, hello: pb.Hello) -> None:
        t = self._s
        # The hub's agent-id rule, so an id that works on one transport works on all.
        if not AGENT_ID.fullmatch(hello.agent):
            raise InvalidMessage(f"invalid agent id {hello.agent!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -, "
                                 "starting with a letter or digit")
        self._agent = hello.agent
        self._window = max(1, hello.receive_window or 1)
        self._filters = {validate_filter(f) for f in hello.subscriptions}
        nc = NATS()
        self._nc = nc
        where = f"NATS at {t.address}"
        if t.tls:
            await require_tls(t.servers, min(self._timeout, PROBE_TIMEOUT))
        try:
            async with asyncio.timeout(self._timeout):
                with nats_errors(f"connecting to {where} as {hello.agent!r} with "
                                 f"{t.credentials_named(hello.token)}"):
                    try:
                        await nc.connect(**t.connect_options(hello.agent, hello.token),
                                         connect_timeout=self._timeout,
                                         error_cb=self._on_error, closed_cb=self._on_closed)
                    except nats.errors.NoServersError as exc:  # every server tried; say why
                        raise ConnectError(f"no NATS server reachable at {t.address}: "
                                           f"{self._last_error or exc}; {_FIX_UNREACHABLE}") from exc
        except TimeoutError as exc:
            detail = f" ({self._last_error})" if self._last_error else ""
            raise ConnectError(f"no NATS server reachable at {t.address} within "
                               f"{self._timeout:.3g} s{detail}; {_FIX_UNREACHABLE}") from exc
        with nats_errors(f"{where}, agent {hello.agent!r}"):
            await self._check_presence(nc)
            self._js = nc.jetstream(timeout=self._timeout)
            await self._ensure_stream()
            self._chunk_room = max(1024, nc.max_payload - HEADER_ROOM)
            session_id, resumed = await self._open_session(hello)
            await nc.subscribe(t.subjects.presence(hello.agent), cb=self._answer_presence)
            await self._start_pull(_Pull(self._consumer))
            # A reconnecting bus dropped the group messages it had not read; what it read it
            # acks first thing on this connection. The rest is NAKed after RELEASE_GRACE, so
            # another member gets it then rather than after ack_wait.
            for seq in [seq for seq in self._state.unacked if seq >> GROUP_SEQ_SHIFT]:
                self._released[seq] = self._state.unacked.pop(seq)
            for shared in hello.group_subscriptions:
                await self._join_group(validate_group(shared.group), validate_filter(shared.filter))
        self._welcome(session_id, resumed, t.publish_window, t.publish_window_bytes, t.max_message_bytes,
                      f"nats://{t.address}/{t.subjects.namespace}")
        self._spawn(self._watchdog(), "watchdog")
        self._spawn(self._keep_claims(), "claims")
        if self._released:
            self._spawn(self._nak_released(), "released")
        await self._pull()

    async def _nak_released(self) -> None:
        await asyncio.sleep(RELEASE_GRACE)
        released, self._released = self._released, {}
        await self._reply([a for acks in released.values() for a in acks], b"-NAK")

    async def _start_pull(self, pull: _Pull) -> None:
        """Pull from ``pull.consumer`` from now on."""
        pull.chunks.max_payload = self.max_payload
        pull.subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._s.subjects.stream}.{pull.consumer}"
        pull.inbox = self._nc.new_inbox()
        pull.last_heard = asyncio.get_running_loop().time()
        pull.subscription = await self._nc.subscribe(
            pull.inbox, cb=functools.partial(self._on_pull_message, pull))
        self._pulls[pull.consumer] = pull

    async def _join_group(self, group: str, pattern: str) -> None:
        """Create the group's consumer on ``pattern`` if no member did yet, and pull from it."""
        t = self._s
        name = t.subjects.group_consumer(group, pattern)
        if name in self._pulls:
            return
        await self._js.add_consumer(t.subjects.stream, api.ConsumerConfig(
            name=name, durable_name=name,
            deliver_policy=api.DeliverPolicy.NEW, ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=t.ack_wait, max_ack_pending=GROUP_MAX_ACK_PENDING,
            filter_subjects=t.subjects.filter(pattern),
            # It lives while any member pulls from it, like a session while its agent is away.
            inactive_threshold=t.session_expiry,
            description=f"latentwire group {group!r} on {pattern!r}"))
        await self._start_pull(_Pull(name, group, self._state.group_offset(name)))

    async def _leave_group(self, group: str, pattern: str) -> None:
        """Stop pulling from the group's consumer and hand back what the bus did not ack."""
        pull = self._pulls.pop(self._s.subjects.group_consumer(group, pattern), None)
        if pull is None:
            return
        with contextlib.suppress(nats.errors.Error):
            await pull.subscription.unsubscribe()
        await self._hand_back(pull)

    async def _hand_back(self, pull: _Pull) -> None:
        """NAK a group's deliveries this bus holds, so another member gets them now rather than
        after ``ack_wait`` (the bus released them unread; it acks what it read first)."""
        held = [seq for seq in self._state.unacked if pull.holds(seq)]
        subjects = [a for seq in held for a in self._state.unacked.pop(seq)]
        kept = [(f, a) for f, a in self._backlog if not pull.holds(a.seq)]
        subjects += [a for _, arrived in self._backlog if pull.holds(arrived.seq) for a in arrived.acks]
        self._backlog = deque(kept)
        await self._reply(subjects, b"-NAK")

    async def _check_presence(self, nc: NATS) -> None:
        """Refuse the agent id if another live bus answers for it (as the hub refuses it)."""
        t = self._s
        try:
            reply = await nc.request(t.subjects.presence(self._agent), b"", timeout=PRESENCE_WAIT)
        except nats.errors.NoRespondersError:
            return
        except nats.errors.TimeoutError:
            return  # a subscription of a connection the server has not yet noticed is gone
        if reply.data.decode(errors="replace") != self._state.nonce:
            raise AlreadyConnected(f"agent {self._agent!r} is already connected to the NATS cluster "
                                   f"at {t.address} (namespace {t.subjects.namespace!r})")

    async def _answer_presence(self, msg: Msg) -> None:
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(self._state.nonce.encode())

    async def _ensure_stream(self) -> None:
        t = self._s
        try:
            await self._js.stream_info(t.subjects.stream)
        except nats.js.errors.NotFoundError:
            # Interest retention: a message stays only until every consumer that wanted it
            # acknowledged it, like the hub's session queues; one nobody wants is not kept.
            await self._js.add_stream(api.StreamConfig(
                name=t.subjects.stream, subjects=t.subjects.stream_subjects,
                retention=api.RetentionPolicy.INTEREST, storage=api.StorageType.FILE,
                num_replicas=t.replicas, max_bytes=t.stream_max_bytes or -1,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=t.duplicate_window,
                description=f"latentwire namespace {t.subjects.namespace}"))

    def _consumer_config(self, filters: set[str]) -> api.ConsumerConfig:
        t = self._s
        largest = math.ceil(t.max_message_bytes / self._chunk_room) + 1
        return api.ConsumerConfig(
            name=self._consumer, durable_name=self._consumer,
            deliver_policy=api.DeliverPolicy.NEW, ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=t.ack_wait, max_ack_pending=self._window + largest,
            filter_subjects=t.subjects.consumer_filters(self._agent, filters),
            inactive_threshold=t.session_expiry, metadata={SESSION_KEY: self._session},
            description=f"latentwire session of {self._agent}")

    async def _open_session(self, hello: pb.Hello) -> tuple[str, bool]:
        """Create the agent's consumer, or take up the one it left; (session id, resumed)."""
        t = self._s
        self._consumer = t.subjects.consumer(self._agent)
        try:
            info = await self._js.consumer_info(t.subjects.stream, self._consumer)
        except nats.js.errors.NotFoundError:
            info = None
        if info is None:
            self._session = uuid.uuid4().hex
            await self._js.add_consumer(t.subjects.stream, self._consumer_config(self._filters))
            self._state.unacked.clear()  # deliveries of a session that is gone
            return self._session, False
        self._session = (info.config.metadata or {}).get(SESSION_KEY) or uuid.uuid4().hex
        # The client is the source of truth for its subscriptions (as on the hub).
        await self._js.add_consumer(t.subjects.stream, self._consumer_config(self._filters))
        if (self._nc.connected_server_version.major, self._nc.connected_server_version.minor) >= RESET_SINCE:
            # Everything after the ack floor comes again, in order: what the last connection had
            # in flight is not left waiting for ack_wait, and nothing newer overtakes it.
            await self._nc.request(f"$JS.API.CONSUMER.RESET.{t.subjects.stream}.{self._consumer}",
                                   b"", timeout=self._timeout)
        return self._session, True

    # -- publishing ------------------------------------------------------------------------------

    async def _publish(self, publish: pb.Publish, payload: Any) -> None:
        env, seq = publish.envelope, publish.seq
        t = self._s
        futures = []
        try:
            check_envelope(env, len(payload), t.max_message_bytes)  # what a hub would refuse
            subject, headers, data = encode_message(env, payload, self._agent, t.subjects)
            with nats_errors(f"publishing to {subject!r}"):
                if env.recipient:
                    await self._check_recipient(env.recipient)
                for own, piece in split(headers, data, env.id, self._chunk_room):
                    futures.append(await self._js.publish_async(subject, bytes(piece), headers=own))
        except (ConnectError, Unavailable) as exc:
            raise ConnectError(str(exc)) from exc  # the bus reconnects and resends
        except LatentwireError as exc:
            self._push_rejection(seq, code_for(exc), str(exc))
            return
        self._spawn(self._await_pubacks(seq, subject, futures), f"puback-{seq}")

    async def _check_recipient(self, agent: str) -> None:
        """Raise `UnknownAgent` unless ``agent`` has a session (its consumer exists)."""
        subjects = self._s.subjects
        try:
            await self._js.consumer_info(subjects.stream, subjects.consumer(agent))
        except nats.js.errors.NotFoundError:
            raise UnknownAgent(agent, f"unknown agent {agent!r}: no session with that id in NATS "
                               f"namespace {subjects.namespace!r}") from None

    async def _await_pubacks(self, seq: int, subject: str, futures: list[asyncio.Future]) -> None:
        try:
            async with asyncio.timeout(self._s.puback_timeout):
                with nats_errors(f"publishing to {subject!r}"):
                    await asyncio.gather(*futures)
        except (TimeoutError, ConnectError, Unavailable) as exc:
            for fut in futures:
                fut.cancel()
            # Whether the stream has it is unknown: the bus resends it on the next connection
            # and JetStream drops the copy it already has (same Nats-Msg-Id).
            self._fail(ConnectError(f"no JetStream PubAck for a publish to {subject!r} within "
                                    f"{self._s.puback_timeout:g} s: {exc or 'timed out'}"))
            return
        except LatentwireError as exc:
            self._push_rejection(seq, code_for(exc), str(exc))
            return
        self._push(pb.Frame(publish_ack=pb.Ack(seqs=[seq])), b"")

    # -- subscriptions and leaving -----------------------------------------------------------------

    async def _subscription(self, kind: str, request: pb.Subscribe | pb.Unsubscribe) -> None:
        ack = pb.SubscribeAck(request_id=request.request_id)
        try:
            filters = {validate_filter(f) for f in request.filters}
            if request.group:
                group = validate_group(request.group)
                with nats_errors(f"{kind} of {self._agent!r} in group {group!r}"):
                    for pattern in sorted(filters):
                        await (self._join_group if kind == "subscribe" else self._leave_group)(group, pattern)
                self._push(pb.Frame(subscribe_ack=ack), b"")
                await self._pull()
                return
            wanted = self._filters | filters if kind == "subscribe" else self._filters - filters
            with nats_errors(f"updating the consumer of {self._agent!r}"):
                await self._js.add_consumer(self._s.subjects.stream, self._consumer_config(wanted))
            self._filters = wanted
        except (InvalidMessage, ConfigError) as exc:
            ack.code, ack.reason = code_for(exc), str(exc)
        except (ConnectError, Unavailable) as exc:
            self._fail(ConnectError(f"NATS {kind} failed: {exc}"))
            return
        except LatentwireError as exc:
            ack.code, ack.reason = code_for(exc), str(exc)
        self._push(pb.Frame(subscribe_ack=ack), b"")

    async def _bye(self) -> None:
        """bye: delete the consumer, so the session and anything still queued for it are gone;
        the groups' consumers stay for their other members."""
        for pull in list(self._pulls.values()):
            if pull.group:
                await self._hand_back(pull)
        with contextlib.suppress(LatentwireError, TimeoutError):
            async with asyncio.timeout(self._timeout):
                with nats_errors(f"deleting the consumer of {self._agent!r}"):
                    await self._js.delete_consumer(self._s.subjects.stream, self._consumer)
        self._state.unacked.clear()
        self._fail(ConnectError("left NATS (bye)"))

    # -- deliveries ------------------------------------------------------------------------------

    async def _pull(self) -> None:
        """Ask each consumer for as many messages as the bus has room for (credits)."""
        for pull in list(self._pulls.values()):
            await self._pull_from(pull)

    async def _pull_from(self, pull: _Pull) -> None:
        room = max(self._window - len(self._state.unacked) - len(self._backlog), pull.chunks.missing)
        want = room - pull.outstanding
        # Small grants wait until they add up, so few pull requests are open at once.
        if want <= 0 or (pull.outstanding and want < max(1, self._window // 4)):
            return
        if self._nc is None or self._failure is not None or self._pulls.get(pull.consumer) is not pull:
            return
        pull.outstanding += want
        request = {"batch": want, "expires": int(PULL_EXPIRES * 1e9),
                   "idle_heartbeat": int(PULL_HEARTBEAT * 1e9)}
        with contextlib.suppress(nats.errors.Error):  # a lost connection is noticed by closed_cb
            await self._nc.publish(pull.subject, json.dumps(request).encode(), reply=pull.inbox)

    async def _on_pull_message(self, pull: _Pull, msg: Msg) -> None:
        # Called by nats-py, in order, for everything a consumer sends to its pull inbox.
        pull.last_heard = asyncio.get_running_loop().time()
        if not msg.reply:  # a status of a pull request, not a delivery
            await self._on_status(pull, msg.headers or {})
            return
        pull.outstanding = max(0, pull.outstanding - 1)
        meta = msg.metadata
        headers = msg.headers or {}
        pull.chunks.max_payload = self.max_payload  # the bus sets it from the welcome
        redelivered = meta.num_delivered > 1
        seq = pull.offset + meta.sequence.stream
        chunk = headers.get(HDR_CHUNK)
        try:
            if chunk is None:
                arrived: Arrived | None = Arrived(seq, headers, msg.data, [msg.reply], redelivered)
            else:
                arrived = pull.chunks.add(chunk, headers, msg.data, seq, msg.reply, redelivered)
            if arrived is not None:
                await self._arrived(msg.subject, arrived, pull.group)
        except InvalidMessage as exc:
            log.warning("%s: dropping a NATS message: %s", self._agent, exc)
            await self._ack([msg.reply])
        await self._pull()

    async def _on_status(self, pull: _Pull, headers: dict[str, str]) -> None:
        status = headers.get("Status", "")
        if status == "100":  # idle heartbeat
            return
        description = headers.get("Description", "")
        if status == "409" and "deleted" in description.lower():
            whose = f"group {pull.group!r}" if pull.group else "session"
            self._fail(ConnectError(f"the NATS consumer ({whose}) of {self._agent!r} was deleted"))
            return
        pending = headers.get("Nats-Pending-Messages")
        if pending is not None and pending.isdigit():  # what the ended request did not fill
            pull.outstanding = max(0, pull.outstanding - int(pending))
        else:
            pull.outstanding = 0  # the request is gone; asking again costs at most a duplicate
        log.debug("%s: pull request ended: %s %s", self._agent, status, description)
        await self._pull_from(pull)

    async def _arrived(self, subject: str, arrived: Arrived, group: str) -> None:
        t = self._s
        if arrived.seq in self._state.unacked:  # a copy of a message the bus holds: only its acks are new
            self._state.unacked[arrived.seq] = arrived.acks
            return
        env = decode_message(subject, arrived.headers, arrived.payload if isinstance(arrived.payload, bytes)
                             else b"", t.subjects)
        payload: Any = arrived.payload
        if (self.max_payload is not None and not isinstance(payload, Oversize)
                and len(payload) > self.max_payload):
            payload = Oversize(len(payload), self.max_payload)
        arrived.payload = payload
        frame = pb.Frame(deliver=pb.Deliver(seq=arrived.seq, envelope=env, redelivered=arrived.redelivered,
                                            group=group))
        if len(self._state.unacked) < self._window and not self._backlog:
            await self._hand_over(frame, arrived)
        else:
            self._backlog.append((frame, arrived))

    async def _hand_over(self, frame: pb.Frame, arrived: Arrived) -> None:
        if is_expired(frame.deliver.envelope):
            self._state.expired += 1
            await self._ack(arrived.acks)
            return
        self._state.unacked[arrived.seq] = arrived.acks
        self._push(frame, arrived.payload)

    async def _acked(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            acks = self._state.unacked.pop(seq, None) or self._released.pop(seq, None)
            if acks is not None:  # else already acked: a copy from before a reconnect
                await self._ack(acks)
        while self._backlog and len(self._state.unacked) < self._window:
            await self._hand_over(*self._backlog.popleft())
        await self._pull()

    async def _ack(self, subjects: list[str]) -> None:
        # JetStream acks by stream sequence, so an ack subject from an earlier connection works.
        await self._reply(subjects, b"+ACK")

    async def _reply(self, subjects: list[str], answer: bytes) -> None:
        """Send ``answer`` (+ACK, -NAK, +WPI) to each delivery's ack subject."""
        if self._nc is None or self._failure is not None:
            return  # unacked deliveries come again on the next connection
        with contextlib.suppress(nats.errors.Error):
            for subject in subjects:
                await self._nc.publish(subject, answer)

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while self._failure is None and not self._closed:  # not only cancellation: see _isolated
            await asyncio.sleep(PULL_HEARTBEAT)
            if self._nc is not None and not self._nc.is_connected:
                why = self._nc.last_error or "disconnected"
                self._fail(ConnectError(f"lost NATS at {self._s.address}: {why}"))
                return
            for pull in list(self._pulls.values()):
                if pull.outstanding and loop.time() - pull.last_heard > 2.5 * PULL_HEARTBEAT:
                    log.debug("%s: no heartbeat from consumer %s; pulling again", self._agent, pull.consumer)
                    pull.outstanding = 0
                    pull.last_heard = loop.time()
                    await self._pull_from(pull)
                for msg_id, acks in pull.chunks.expire(PARTIAL_TIMEOUT):
                    log.warning("%s: dropping the incomplete chunked message %s", self._agent, msg_id)
                    await self._ack(acks)

    async def _keep_claims(self) -> None:
        """While this bus lives, tell JetStream it is still working on the group deliveries it
        holds (``+WPI`` restarts their ``ack_wait``): a slow member keeps its messages, and
        only a dead one's go to another member."""
        while self._failure is None and not self._closed:
            await asyncio.sleep(self._s.ack_wait / 3)
            groups = [p for p in self._pulls.values() if p.group]
            if not groups:
                continue
            held = [a for seq, acks in self._state.unacked.items() if any(p.holds(seq) for p in groups)
                    for a in acks]
            held += [a for _, arrived in self._backlog if any(p.holds(arrived.seq) for p in groups)
                     for a in arrived.acks]
            await self._reply(held, b"+WPI")

    # -- plumbing --------------------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if self._welcomed and isinstance(exc, _CONNECTION_LOST):
            # nats-py reports a dead socket here first; its closed callback may never come.
            self._fail(ConnectError(f"lost NATS at {self._s.address}: {exc or type(exc).__name__}"))
        elif isinstance(exc, nats.errors.SlowConsumerError):
            log.warning("%s: nats-py dropped messages of a slow subscription: %s", self._agent, exc)
        else:
            log.debug("%s: NATS reported %r", self._agent, exc)

    async def _on_closed(self) -> None:
        detail = self._nc.last_error if self._nc is not None else None
        self._fail(ConnectError(f"lost NATS at {self._s.address}: {detail or 'connection closed'}"))

    def _fail(self, exc: BaseException) -> None:
        super()._fail(exc)
        for task in list(self._tasks):  # pulls, claims and PubAck waits are of no use now
            if task is not asyncio.current_task():
                task.cancel()
