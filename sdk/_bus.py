"""`Bus`: one agent's connection to the latent bus, over any transport.

Everything a transport should not know lives here, once: the hello/welcome handshake,
publish credits (the hub's window of unacked publishes and bytes), delivery acks (sent when the
application takes a message, so an idle consumer holds its producers back), dedup by message
id, request/reply correlation, subscriptions, and reconnecting with backoff to resume the
session (unacked publishes are re-sent, unacked deliveries come again and are deduplicated).

Lifecycle (like aiomqtt's client): ``async with connect(...) as bus`` opens, exiting flushes
pending publishes, says bye and closes. A bus is not reentrant and cannot be reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._codes import error_for
from ._credits import Credits
from ._message import ERROR_TYPE_HEADER, Control, Message, check_envelope, from_envelope, to_envelope
from ._proto import bus_pb2 as pb
from ._topics import topic_matches, validate_filter, validate_group
from ._tracing import publish_span
from ._version import __version__
from .errors import (
    AlreadyConnected,
    AuthError,
    BusClosed,
    BusError,
    ConfigError,
    ConnectError,
    InvalidMessage,
    LatentwireError,
    MessageTooLarge,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    Unavailable,
)
from .transports.base import Connection, Oversize, Payload, Transport

log = logging.getLogger("latentwire.bus")

_END = object()  # ends a subscription's queue
BYE_TIMEOUT = 2.0  # seconds aclose() waits for the hub to end the stream after bye


def _seen_key(group: str, msg_id: str) -> str:
    """What dedup remembers of a delivery: its id, and the group it came for, if any."""
    return f"{group}\x00{msg_id}" if group else msg_id


class BusState(enum.Enum):
    """Where a `Bus` is in its life."""

    UNOPENED = "unopened"  # created, not yet connected
    OPEN = "open"  # connected
    RECONNECTING = "reconnecting"  # connection lost, resuming the session; operations wait
    CLOSED = "closed"  # closed by the user or failed for good; cannot be reopened


@dataclass(slots=True)
class _PendingPublish:
    frame: pb.Frame
    payload: Payload
    future: asyncio.Future
    recipient: str
    size: int


class Subscription:
    """Messages matching one or more topic filters (or the bus's direct messages).

    Awaitable, an async context manager and an async iterator::

        async with bus.subscribe("robots/+/camera") as sub:
            async for msg in sub:
                ...

    The subscription is active on the hub once awaited or entered. Iteration ends when the
    subscription or the bus is closed, and raises `ConnectError` if the bus failed. ``group``
    is the subscription group it belongs to ("" for none; see `Bus.subscribe`).
    """

    def __init__(self, bus: Bus, filters: tuple[str, ...], *, direct: bool = False,
                 group: str = "") -> None:
        self._bus = bus
        self.filters = filters
        self.direct = direct
        self.group = group
        self._queue: asyncio.Queue = asyncio.Queue(bus.receive_window + 1)
        self._active = direct
        self._closed = False
        self._error: BaseException | None = None

    def matches(self, topic: str) -> bool:
        """Whether a published message on ``topic`` belongs to this subscription."""
        return any(topic_matches(f, topic) for f in self.filters)

    async def _activate(self) -> Subscription:
        if self._closed:
            raise BusClosed("subscription is closed")
        if not self._active:
            await self._bus._add_subscription(self)
            self._active = True
        return self

    def __await__(self):
        return self._activate().__await__()

    async def __aenter__(self) -> Subscription:
        return await self._activate()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        await self._activate()
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # keep ending for any other reader
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        msg, key = item
        self._bus._consumed(key)
        return msg

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message; raises `TimeoutError` after ``timeout`` s, `BusClosed` at the end."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except StopAsyncIteration:
            raise BusClosed("subscription ended") from None

    def _end(self, error: BaseException | None = None) -> None:
        self._error = error
        # Release the credits of messages nobody will read, then wake the readers. A group's
        # messages are not acked unread: the hub (or broker) gives them to another member.
        if self.group:
            self._give_back()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not _END:
                self._bus._consumed(item[1])
        self._queue.put_nowait(_END)

    def _give_back(self) -> None:
        """Forget a group's messages not yet read, unacked: another member handles them."""
        kept = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END:
                kept.append(item)
            else:
                self._bus._released(item[1], self.group, item[0].id)
        for item in kept:
            self._queue.put_nowait(item)

    async def aclose(self) -> None:
        """Stop receiving; queued messages are released (acked) unread."""
        if self._closed or self.direct:
            return
        self._closed = True
        self._end()
        if self._active:
            await self._bus._remove_subscription(self)


class Bus:
    """An agent's connection to the bus. Create it with `latentwire.connect`."""

    def __init__(
        self,
        transport: Transport,
        *,
        agent: str | None = None,
        token: str | None = None,
        url: str = "",
        receive_window: int = 256,
        connect_timeout: float = 10.0,
        reconnect_timeout: float = 30.0,
        operation_timeout: float = 30.0,
        dedup_window: int = 65_536,
    ) -> None:
        if receive_window < 1:
            raise ValueError(f"receive_window must be >= 1, got {receive_window}")
        self.agent = agent or f"anon-{uuid.uuid4().hex[:8]}"
        self.url = url
        self.receive_window = receive_window
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.operation_timeout = operation_timeout
        self.state = BusState.UNOPENED
        self.session_id = ""
        self.max_message_bytes = 0  # known after the hub's welcome
        self._transport = transport
        self._token = token or ""
        self._dedup_window = dedup_window
        self._conn: Connection | None = None
        self._supervisor: asyncio.Task | None = None
        self._closing = False  # aclose() began: no new operations
        self._leaving = False  # bye sent: a lost connection is not re-established
        self._failure: BaseException | None = None
        self._credits = Credits(1, 1)  # replaced by the hub's window at the first welcome
        self._groups_routed = True  # until a welcome says otherwise (an older hub)
        self._seq = 0
        self._unacked: dict[int, _PendingPublish] = {}
        self._async_errors: list[BaseException] = []
        self._out: deque[tuple[pb.Frame, Payload]] = deque()
        self._acks: list[int] = []
        self._wake = asyncio.Event()
        self._requests: dict[str, asyncio.Future] = {}
        self._sub_requests: dict[int, asyncio.Future] = {}
        self._subs: set[Subscription] = set()
        # Local subscriptions per (group, filter); group "" is an ordinary subscription.
        self._filters: Counter[tuple[str, str]] = Counter()
        # Local consumers still to take a delivery, by (session epoch, delivery seq): a new
        # session (hub restarted) numbers its deliveries from 1 again.
        self._refs: dict[tuple[int, int], int] = {}
        self._epoch = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._inbox = Subscription(self, (), direct=True)

    def __repr__(self) -> str:
        return f"<Bus agent={self.agent!r} url={self.url!r} state={self.state.value}>"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Bus:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect and start the session; raises `ConnectError` if the hub cannot be reached."""
        if self.state is not BusState.UNOPENED:
            raise BusClosed(
                f"cannot open a bus that is {self.state.value}: a Bus is not reentrant and "
                "cannot be reopened; call latentwire.connect() again"
            )
        try:
            conn = await self._transport.connect(self.connect_timeout)
            leftovers = await self._handshake(conn)
        except BaseException:
            self.state = BusState.CLOSED
            await self._transport.aclose()
            raise
        self.state = BusState.OPEN
        self._supervisor = asyncio.create_task(
            self._supervise(conn, leftovers), name=f"latentwire[{self.agent}].supervisor"
        )

    async def aclose(self) -> None:
        """Flush pending publishes, leave the hub (it forgets the session) and close."""
        if self.state is BusState.CLOSED:
            return
        if self.state is BusState.UNOPENED:
            self.state = BusState.CLOSED
            await self._transport.aclose()
            return
        self._closing = True
        if self._supervisor is not None and not self._supervisor.done():
            with contextlib.suppress(TimeoutError, LatentwireError):
                await self.flush(timeout=self.operation_timeout)
            self._leaving = True
            if self._conn is not None and self.state is BusState.OPEN:
                self._out.append((pb.Frame(bye=pb.Bye()), b""))
                self._wake.set()
                # The hub ends the stream once it has forgotten the session, so when this
                # returns, a message to this agent is refused (UnknownAgent), not queued.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BYE_TIMEOUT):
                        await asyncio.shield(self._supervisor)
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._conn is not None:
            await self._conn.aclose()
        await self._transport.aclose()
        self._shutdown(None)

    def _shutdown(self, error: BaseException | None) -> None:
        """End everything waiting on this bus, with ``error`` (None: closed by the user)."""
        self.state = BusState.CLOSED
        self._failure = error
        exc = error or BusClosed("bus closed")
        for pending in self._unacked.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
                pending.future.exception()  # mark retrieved: the caller may be gone
        self._unacked.clear()
        for fut in [*self._requests.values(), *self._sub_requests.values()]:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
        for sub in [self._inbox, *self._subs]:
            sub._end(error)
        self._credits.wake_all()  # publishers waiting for credit find the bus closed

    def _check_usable(self) -> None:
        if self.state is BusState.UNOPENED:
            raise BusClosed("bus is not open: use `async with latentwire.connect(...) as bus`")
        if self.state is BusState.CLOSED or self._closing:
            raise self._failure if self._failure is not None else BusClosed("bus is closed")

    # -- connection management ---------------------------------------------------------------

    async def _handshake(self, conn: Connection) -> list:
        hello = pb.Hello(
            agent=self.agent,
            session_id=self.session_id,
            receive_window=self.receive_window,
            token=self._token,
            subscriptions=sorted(f for g, f in self._filters if not g),
            group_subscriptions=[pb.GroupSubscription(group=g, filter=f)
                                 for g, f in sorted(self._filters) if g],
            client=f"latentwire-python/{__version__}",
        )
        try:
            await conn.send([(pb.Frame(hello=hello), b"")])
            async with asyncio.timeout(self.connect_timeout):
                batch = await conn.receive()
        except TimeoutError as exc:
            await conn.aclose()
            raise ConnectError(f"hub at {self.url} did not answer hello within "
                               f"{self.connect_timeout:g} s") from exc
        except BaseException:
            await conn.aclose()
            raise
        frame = batch[0][0]
        kind = frame.WhichOneof("kind")
        if kind == "error":
            await conn.aclose()
            raise error_for(frame.error.code, frame.error.reason, agent=self.agent)
        if kind != "welcome":
            await conn.aclose()
            raise ProtocolError(f"hub answered hello with {kind!r}, expected welcome")
        welcome = frame.welcome
        if self.session_id and not welcome.resumed:
            log.warning("%s: hub %s did not know session %s; started a new one",
                        self.agent, welcome.hub_id, self.session_id)
        first = not self.session_id
        if welcome.session_id != self.session_id:
            self._epoch += 1
            self._acks.clear()  # they number deliveries of the session that is gone
        self.session_id = welcome.session_id
        if conn.max_payload is None:
            conn.max_payload = welcome.max_message_bytes  # the hub never sends more
        self.max_message_bytes = welcome.max_message_bytes
        if conn.max_frame_bytes:
            conn.max_frame_bytes = min(conn.max_frame_bytes, welcome.max_frame_bytes)
        if first:
            self._credits = Credits(welcome.publish_window, welcome.publish_window_bytes)
        self._groups_routed = welcome.groups
        if not welcome.groups and any(sub.group for sub in self._subs):
            log.warning("%s: hub %s does not route subscription groups (it is older than this client); "
                        "this bus's group subscriptions get nothing until it is upgraded",
                        self.agent, welcome.hub_id)
        self._conn = conn
        return batch[1:]

    async def _supervise(self, conn: Connection, leftovers: list) -> None:
        try:
            await self._keep_connected(conn, leftovers)
        except Exception as exc:  # a bug must not leave subscribers waiting forever
            log.exception("%s: bus failed", self.agent)
            self._shutdown(BusError(f"bus failed: {exc!r}"))

    async def _keep_connected(self, conn: Connection, leftovers: list) -> None:
        while True:
            try:
                await self._run_connection(conn, leftovers)
            except* (ConnectError, ProtocolError) as eg:
                lost: BaseException = eg.exceptions[0]
            if self._leaving:
                return
            log.warning("%s: connection to %s lost (%s); reconnecting", self.agent, self.url, lost)
            # The hub gives a lost member's share of a group to the other members (a broker
            # does once this bus hands it back), so what this bus has not read is not its own.
            for sub in self._subs:
                if sub.group:
                    sub._give_back()
            self.state = BusState.RECONNECTING
            await self._conn.aclose()
            try:
                conn, leftovers = await self._reconnect(lost)
            except LatentwireError as exc:
                self._shutdown(exc)
                return
            self.state = BusState.OPEN
            log.info("%s: reconnected to %s, session %s", self.agent, self.url, self.session_id)

    async def _reconnect(self, cause: BaseException) -> tuple[Connection, list]:
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        last: BaseException = cause
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectError(
                    f"lost the hub at {self.url} and could not reconnect within "
                    f"{self.reconnect_timeout:g} s: {last}"
                ) from last
            try:
                conn = await self._transport.connect(min(remaining, self.connect_timeout))
                leftovers = await self._handshake(conn)
            except AuthError:
                raise
            except (ConnectError, Unavailable, AlreadyConnected, ProtocolError) as exc:
                last = exc
            else:
                # The session's state now comes from the welcome: resend what the hub has
                # not acknowledged, in order; hello already carried every subscription.
                self._out.clear()
                for pending in self._unacked.values():
                    self._out.append((pending.frame, pending.payload))
                for fut in self._sub_requests.values():
                    if not fut.done():
                        fut.set_result(None)
                self._sub_requests.clear()
                self._wake.set()
                return conn, leftovers
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 2.0)

    async def _run_connection(self, conn: Connection, leftovers: list) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._write_loop(conn), name=f"latentwire[{self.agent}].writer")
            self._dispatch(leftovers)
            while True:
                self._dispatch(await conn.receive())

    async def _write_loop(self, conn: Connection) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            frames: list[tuple[pb.Frame, Payload]] = []
            if self._acks:
                frames.append((pb.Frame(delivery_ack=pb.Ack(seqs=self._acks)), b""))
                self._acks = []
            frames.extend(self._out)
            self._out.clear()
            if frames:
                await conn.send(frames)

    def _dispatch(self, frames: list) -> None:
        for frame, payload in frames:
            kind = frame.WhichOneof("kind")
            if kind == "deliver":
                self._on_deliver(frame.deliver, payload)
            elif kind == "publish_ack":
                self._on_publish_ack(frame.publish_ack)
            elif kind == "subscribe_ack":
                ack = frame.subscribe_ack
                fut = self._sub_requests.pop(ack.request_id, None)
                if fut is not None and not fut.done():
                    if ack.code:
                        fut.set_exception(error_for(ack.code, ack.reason))
                    else:
                        fut.set_result(None)
            elif kind == "error":
                log.warning("%s: hub reported %s: %s", self.agent,
                            pb.ErrorCode.Name(frame.error.code), frame.error.reason)
            elif kind == "drain":
                log.info("%s: hub is draining (%s); will reconnect", self.agent, frame.drain.reason)
            else:
                log.warning("%s: ignoring unexpected %r frame from the hub", self.agent, kind)

    def _on_publish_ack(self, ack: pb.Ack) -> None:
        for seq in ack.seqs:
            pending = self._unacked.pop(seq, None)
            if pending is not None:
                self._credits.release(pending.size)
                if not pending.future.done():
                    pending.future.set_result(None)
        for rejection in ack.rejections:
            pending = self._unacked.pop(rejection.seq, None)
            if pending is not None:
                self._credits.release(pending.size)
                if not pending.future.done():
                    pending.future.set_exception(error_for(
                        rejection.code, rejection.reason, agent=pending.recipient,
                        size=pending.size, limit=rejection.limit or self.max_message_bytes))

    def _on_deliver(self, deliver: pb.Deliver, payload: Payload) -> None:
        env, seq = deliver.envelope, deliver.seq
        if env.correlation_id and not env.reply_to:  # a reply to one of our requests
            self._ack(seq)
            fut = self._requests.get(env.correlation_id)
            if fut is not None and not fut.done():
                try:
                    fut.set_result(from_envelope(env, payload))
                except InvalidMessage as exc:
                    fut.set_exception(exc)
            return
        key = (self._epoch, seq)
        # One message may come once plainly and once per group this bus is a member of.
        seen = _seen_key(deliver.group, env.id)
        if seen in self._seen:
            if key not in self._refs:  # consumed earlier; the ack was lost with a connection
                self._ack(seq)
            return
        self._seen[seen] = None
        if len(self._seen) > self._dedup_window:
            self._seen.popitem(last=False)
        try:
            if isinstance(payload, Oversize):
                raise MessageTooLarge(payload.size, payload.limit,
                                      f"{payload.size} bytes is above this bus's max_receive_bytes="
                                      f"{payload.limit}")
            msg = from_envelope(env, payload, redelivered=deliver.redelivered)
        except InvalidMessage as exc:
            log.warning("%s: dropping undecodable message %s from %r: %s", self.agent, env.id, env.sender, exc)
            self._ack(seq)
            return
        targets = [self._inbox] if env.recipient else [
            s for s in self._subs if s.group == deliver.group and s.matches(env.topic)]
        if not targets:
            self._ack(seq)
            return
        self._refs[key] = len(targets)
        for sub in targets:
            sub._queue.put_nowait((msg, key))

    def _consumed(self, key: tuple[int, int]) -> None:
        left = self._refs.get(key, 0) - 1
        if left > 0:
            self._refs[key] = left
            return
        if self._refs.pop(key, None) is not None and key[0] == self._epoch:
            self._ack(key[1])  # a delivery of an earlier session has no one to ack to

    def _released(self, key: tuple[int, int], group: str, msg_id: str) -> None:
        """A group's delivery that a closed subscription never read: left unacked, so the hub
        (or broker) hands it to another member; forgotten here, so it is handled if it comes back."""
        left = self._refs.get(key, 0) - 1
        if left > 0:
            self._refs[key] = left
            return
        self._refs.pop(key, None)
        self._seen.pop(_seen_key(group, msg_id), None)

    def _ack(self, seq: int) -> None:
        self._acks.append(seq)
        self._wake.set()

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, *filters: str, group: str | None = None) -> Subscription:
        """Messages published to topics matching any of ``filters`` (``+`` and ``#`` allowed).

        ``group`` makes replicas share the load: the agents subscribed to the same filter with
        the same group name split its messages, each message going to one live member
        (a queue group on NATS, a shared subscription ``$share/<group>/<filter>`` on MQTT 5).
        Messages a member had not acknowledged when its connection dropped go to another
        member, marked `Message.redelivered`; subscribers without a group still get every
        message. A name is 1-64 of ``A-Z a-z 0-9 _ -`` (else `ConfigError`).
        """
        if not filters:
            raise InvalidMessage("subscribe() needs at least one topic filter")
        checked = tuple(validate_filter(f) for f in filters)
        return Subscription(self, checked, group=validate_group(group) if group is not None else "")

    def inbox(self) -> Subscription:
        """Direct messages and requests sent to this agent (see `send` and `request`)."""
        return self._inbox

    async def _add_subscription(self, sub: Subscription) -> None:
        self._check_usable()
        if sub.group and not self._groups_routed:
            # An older hub would take it for a plain subscription, and its deliveries would
            # reach no group subscription here.
            raise ConfigError(f"the hub at {self.url} does not route subscription groups (it is older than "
                              f"this client); upgrade the hub, or subscribe without group=")
        self._subs.add(sub)  # before the hub knows, so nothing routed after the ack is missed
        keys = [(sub.group, f) for f in sub.filters]
        new = [f for g, f in keys if self._filters[(g, f)] == 0]
        self._filters.update(keys)
        if new:
            try:
                await self._subscription_request(
                    pb.Frame(subscribe=pb.Subscribe(filters=new, group=sub.group)))
            except BaseException:
                self._subs.discard(sub)
                self._filters.subtract(keys)
                self._filters = +self._filters
                raise

    async def _remove_subscription(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        keys = [(sub.group, f) for f in sub.filters]
        self._filters.subtract(keys)
        gone = [f for g, f in keys if self._filters[(g, f)] <= 0]
        self._filters = +self._filters
        if gone and self.state is BusState.OPEN and not self._closing:
            with contextlib.suppress(LatentwireError, TimeoutError):
                await self._subscription_request(
                    pb.Frame(unsubscribe=pb.Unsubscribe(filters=gone, group=sub.group)))

    async def _subscription_request(self, frame: pb.Frame) -> None:
        self._seq += 1
        request_id = self._seq
        getattr(frame, frame.WhichOneof("kind")).request_id = request_id
        fut = asyncio.get_running_loop().create_future()
        self._sub_requests[request_id] = fut
        self._out.append((frame, b""))
        self._wake.set()
        try:
            async with asyncio.timeout(self.operation_timeout):
                await fut
        finally:
            self._sub_requests.pop(request_id, None)

    # -- sending -----------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        text: str | None = None,
        *,
        latent: Any = None,
        control: Control | None = None,
        headers: dict[str, str] | None = None,
        ttl: float | None = None,
        wait: bool = True,
    ) -> str:
        """Publish to ``topic``; returns the message id.

        ``latent`` takes a `Latent`, numpy array or torch tensor. With ``wait=True`` this
        returns once the hub has accepted the message (every subscriber's queue holds it) and
        raises its refusal; with ``wait=False`` it returns once the message is handed to the
        connection, and refusals surface from `flush`. Either way it waits while the publish
        window is full, which is how a slow consumer holds its producers back.
        """
        env, payload = to_envelope(topic=topic, text=text, latent=latent, control=control,
                                   headers=headers, ttl=ttl)
        return await self._send_envelope(env, payload, wait)

    async def send(
        self,
        agent: str,
        text: str | None = None,
        *,
        latent: Any = None,
        control: Control | None = None,
        topic: str = "",
        headers: dict[str, str] | None = None,
        ttl: float | None = None,
        wait: bool = True,
    ) -> str:
        """Send a direct message to ``agent`` (raises `UnknownAgent` if the hub has no such agent)."""
        env, payload = to_envelope(topic=topic, recipient=agent, text=text, latent=latent,
                                   control=control, headers=headers, ttl=ttl)
        return await self._send_envelope(env, payload, wait)

    async def request(
        self,
        agent: str,
        text: str | None = None,
        *,
        latent: Any = None,
        control: Control | None = None,
        topic: str = "",
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Message:
        """Send a request to ``agent`` and wait for its reply.

        Raises `RequestTimeout` after ``timeout`` s (the hub also drops the request once it is
        that old), `UnknownAgent` at once if the agent does not exist, and `RemoteError` if the
        agent's handler failed.
        """
        correlation_id = uuid.uuid4().hex
        env, payload = to_envelope(topic=topic, recipient=agent, text=text, latent=latent,
                                   control=control, headers=headers, ttl=timeout,
                                   correlation_id=correlation_id, reply_to=self.agent)
        fut = asyncio.get_running_loop().create_future()
        self._requests[correlation_id] = fut
        try:
            async with asyncio.timeout(timeout):
                await self._send_envelope(env, payload, wait=True)
                reply: Message = await fut
        except TimeoutError:
            raise RequestTimeout(agent, timeout) from None
        finally:
            self._requests.pop(correlation_id, None)
        if reply.is_error:
            raise RemoteError(agent, reply.headers[ERROR_TYPE_HEADER], reply.text or "")
        return reply

    async def reply(
        self,
        request: Message,
        text: str | None = None,
        *,
        latent: Any = None,
        control: Control | None = None,
        headers: dict[str, str] | None = None,
        error: BaseException | None = None,
    ) -> str:
        """Answer a request; with ``error`` the requester's `request` raises `RemoteError`."""
        if not request.is_request:
            raise InvalidMessage(f"message {request.id} is not a request (it has no reply_to)")
        headers = dict(headers or {})
        if error is not None:
            headers[ERROR_TYPE_HEADER] = type(error).__name__
            text, latent, control = str(error) or type(error).__name__, None, None
        env, payload = to_envelope(topic=request.topic, recipient=request.reply_to, text=text,
                                   latent=latent, control=control, headers=headers,
                                   correlation_id=request.correlation_id)
        return await self._send_envelope(env, payload, wait=True)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the hub acknowledged every publish so far; raise the first refusal of a
        ``wait=False`` publish (then forget the others)."""
        futures = [p.future for p in self._unacked.values()]
        if futures:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*futures, return_exceptions=True)
        if self._async_errors:
            first, self._async_errors = self._async_errors[0], []
            raise first

    async def _send_envelope(self, env: pb.Envelope, payload: bytes, wait: bool) -> str:
        with publish_span(env):  # W3C trace context into the headers (sdk/_tracing.py)
            return await self._send(env, payload, wait)

    async def _send(self, env: pb.Envelope, payload: bytes, wait: bool) -> str:
        self._check_usable()
        size = len(payload)
        check_envelope(env, size, self.max_message_bytes)
        await self._credits.acquire(size)
        try:
            self._check_usable()
        except BaseException:
            self._credits.release(size)
            raise
        self._seq += 1
        seq = self._seq
        frame = pb.Frame(publish=pb.Publish(seq=seq, envelope=env))
        fut = asyncio.get_running_loop().create_future()
        self._unacked[seq] = _PendingPublish(frame, payload, fut, env.recipient, size)
        self._out.append((frame, payload))
        self._wake.set()
        if wait:
            await fut
        else:
            fut.add_done_callback(self._note_refusal)
        return env.id

    def _note_refusal(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is None:
            return
        exc = fut.exception()
        if not isinstance(exc, BusClosed):
            log.warning("%s: a publish sent with wait=False was refused: %s", self.agent, exc)
            self._async_errors.append(exc)
