"""`Agent`: a class whose methods handle bus traffic, declared with `on` and `on_direct`;
`Runtime`: runs several agents on one bus URL.

::

    class Critic(latentwire.Agent):
        @latentwire.on_direct
        async def judge(self, msg):          # a request's return value is the reply
            return f"norm={float(np.linalg.norm(msg.latent.numpy())):.2f}"

        @latentwire.on("vision/#")
        async def watch(self, msg):
            ...

Each handler processes its messages one at a time, in order; an exception in a handler is
logged (and, for a request, sent back as a `RemoteError`) and the agent goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import numpy as np

from ._bus import Bus, Subscription
from ._connect import connect
from ._latent import Latent
from ._message import Control, Message
from ._topics import validate_group
from ._tracing import process_span
from .errors import LatentwireError

log = logging.getLogger("latentwire.agent")

Handler = Callable[[Any, Message], Awaitable[Any]]
_TOPICS_ATTR = "__latentwire_topics__"
_DIRECT_ATTR = "__latentwire_direct__"


def on(*filters: str) -> Callable[[Handler], Handler]:
    """Declare an `Agent` method as the handler of messages published to ``filters``."""
    if not filters:
        raise TypeError("on() needs at least one topic filter, e.g. @on('vision/#')")

    def mark(fn: Handler) -> Handler:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"handler {fn.__qualname__} must be an async def")
        setattr(fn, _TOPICS_ATTR, (*getattr(fn, _TOPICS_ATTR, ()), *filters))
        return fn

    return mark


def on_direct(fn: Handler) -> Handler:
    """Declare an `Agent` method as the handler of direct messages and requests.

    For a request, the return value is the reply: a str (text), a `Latent`, numpy array or
    torch tensor (latent), a `Control`, or None (an empty text reply).
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"handler {fn.__qualname__} must be an async def")
    setattr(fn, _DIRECT_ATTR, True)
    return fn


def _reply_body(value: Any) -> dict[str, Any]:
    if value is None:
        return {"text": ""}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, Control):
        return {"control": value}
    if isinstance(value, Latent) or isinstance(value, np.ndarray) or type(value).__module__ == "torch":
        return {"latent": value}
    raise TypeError(f"a request handler must return str, Latent, array, Control or None, "
                    f"not {type(value).__name__}")


class Agent:
    """Base class of agents: subclass it, decorate handlers, run it with `run` or a `Runtime`.

    ``self.bus`` is the agent's connected `Bus` while it runs. Override `on_start` for work
    after every agent of the runtime is connected and subscribed, `on_stop` for clean-up.

    ``group`` (argument, else the class attribute) makes the agent one replica of a role: its
    topic subscriptions join that subscription group, so agents of the same group (each with
    its own id) split the messages between them, as `Bus.subscribe` describes (a NATS queue
    group, an MQTT ``$share/<group>/`` subscription). Direct messages are never shared.
    """

    #: Default agent id (else the lower-cased class name).
    name: ClassVar[str | None] = None
    #: Default subscription group of the agent's topic handlers (None: every replica gets all).
    group: str | None = None

    def __init__(self, name: str | None = None, *, group: str | None = None) -> None:
        self.id = name or type(self).name or type(self).__name__.lower()
        group = group if group is not None else type(self).group
        self.group = validate_group(group) if group is not None else None
        self._bus: Bus | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r}>"

    @property
    def bus(self) -> Bus:
        """The agent's bus; only while the agent runs."""
        if self._bus is None:
            raise LatentwireError(f"agent {self.id!r} is not running")
        return self._bus

    async def on_start(self) -> None:
        """Called once every agent in the runtime is connected and subscribed."""

    async def on_stop(self) -> None:
        """Called before the agent disconnects."""

    def topic_handlers(self) -> list[tuple[tuple[str, ...], Handler]]:
        """Topic routes known only at run time, as ``(filters, handler)`` pairs.

        For agents whose topics come from configuration rather than `on` decorators; they are
        subscribed together with the decorated ones, before any agent's `on_start`.
        """
        return []

    def _handlers(self) -> tuple[list[tuple[tuple[str, ...], Handler]], list[Handler]]:
        topics, direct = [], []
        for name, member in inspect.getmembers(type(self), inspect.iscoroutinefunction):
            method = getattr(self, name)
            if hasattr(member, _TOPICS_ATTR):
                topics.append((getattr(member, _TOPICS_ATTR), method))
            if getattr(member, _DIRECT_ATTR, False):
                direct.append(method)
        if len(direct) > 1:
            raise TypeError(f"{type(self).__name__} declares {len(direct)} @on_direct handlers; "
                            "one handles every direct message")
        return [*self.topic_handlers(), *topics], direct

    async def _subscribe(self, bus: Bus) -> list[tuple[Subscription, Handler]]:
        self._bus = bus
        topics, direct = self._handlers()
        routes = [(await bus.subscribe(*filters, group=self.group), handler)
                  for filters, handler in topics]
        # The inbox is always read: unread direct messages would hold the receive window and
        # stall every subscription of this agent.
        routes.append((bus.inbox(), direct[0] if direct else self._no_direct_handler))
        return routes

    async def _no_direct_handler(self, msg: Message) -> None:
        if not msg.is_request:
            log.warning("%s: dropping a direct message from %r: the agent has no @on_direct handler",
                        self.id, msg.sender)
            return
        raise LookupError(f"agent {self.id!r} takes no direct messages (no @on_direct handler)")

    async def _serve(self, routes: list[tuple[Subscription, Handler]]) -> None:
        async with asyncio.TaskGroup() as tg:
            for sub, handler in routes:
                tg.create_task(self._handle_loop(sub, handler),
                               name=f"latentwire[{self.id}].{handler.__name__}")

    async def _handle_loop(self, sub: Subscription, handler: Handler) -> None:
        async for msg in sub:
            try:
                with process_span(msg, handler.__name__):  # W3C trace context: sdk/_tracing.py
                    result = await handler(msg)
            except Exception as exc:  # a handler's failure must not stop the agent
                if handler != self._no_direct_handler:
                    log.exception("%s: handler %s failed on message %s", self.id, handler.__name__, msg.id)
                if msg.is_request:
                    with contextlib.suppress(LatentwireError):
                        await self.bus.reply(msg, error=exc)
                continue
            if msg.is_request:
                try:
                    await self.bus.reply(msg, **_reply_body(result))
                except (LatentwireError, TypeError) as exc:
                    log.warning("%s: could not reply to %s: %s", self.id, msg.reply_to, exc)

    async def run(self, url: str | None = None, **connect_options: Any) -> None:
        """Connect and serve until cancelled (a one-agent `Runtime`)."""
        await Runtime(url, **connect_options).add(self).run()


class Runtime:
    """Runs several agents, each with its own connection to the same bus URL.

    ``await runtime.run()`` serves until cancelled; ``async with runtime:`` serves in the
    background for the body of the block. Every agent is connected and subscribed before any
    agent's `Agent.on_start` runs, so agents can talk to each other from the start.
    """

    def __init__(self, url: str | None = None, **connect_options: Any) -> None:
        self.url = url
        self.agents: list[Agent] = []
        self._options = connect_options
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Event | None = None

    def add(self, *agents: Agent) -> Runtime:
        """Add agents (ids must be unique); returns the runtime for chaining."""
        for agent in agents:
            if any(a.id == agent.id for a in self.agents):
                raise ValueError(f"an agent with id {agent.id!r} is already in this runtime")
            self.agents.append(agent)
        return self

    async def run(self) -> None:
        """Connect every agent, start them, and serve until cancelled."""
        self._ready = self._ready or asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            routes = []
            for agent in self.agents:
                bus = await stack.enter_async_context(
                    connect(self.url, agent=agent.id, **self._options))
                routes.append(await agent._subscribe(bus))
            try:
                async with asyncio.TaskGroup() as tg:
                    for agent, agent_routes in zip(self.agents, routes):
                        tg.create_task(agent._serve(agent_routes), name=f"latentwire[{agent.id}]")
                    for agent in self.agents:
                        await agent.on_start()
                    self._ready.set()
            finally:
                for agent in self.agents:
                    with contextlib.suppress(Exception):
                        await agent.on_stop()
                    agent._bus = None

    async def __aenter__(self) -> Runtime:
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self.run(), name="latentwire-runtime")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            ready.cancel()
            self._task.result()  # raises why the runtime could not start
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop every agent and disconnect (for a runtime started with ``async with``)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
