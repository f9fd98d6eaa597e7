"""Who may use the hub and what each agent may do: hashed tokens, topic ACLs, direct-message
permissions and per-session limits.

The hub loads one auth file (``--auth-file``, TOML or JSON) at start; a bad file stops the
start with an error naming the field. Example (``docs/security.md`` has the full reference)::

    [defaults.limits]            # every session, unless its agent overrides a value
    max_message_bytes = 16777216
    publish_rate = 200.0         # publishes per second, sustained ...
    publish_burst = 400          # ... with bursts up to this many
    max_subscriptions = 64

    [agents.camera]
    token_hash = "scrypt$16384$8$1$<salt>$<hash>"   # `latentwire hash-token` makes one
    publish = ["robots/+/camera"]                   # topic patterns, same wildcards as topics
    subscribe = ["control/#"]                       # a filter must lie inside one of these
    send = ["planner", "worker-*"]                  # direct messages: agent ids (fnmatch globs)
    admin = false                                   # true: may use the admin API and dashboard

Tokens are stored only as scrypt hashes (`latentwire.hub.tokens`) and a token is never
logged. Checking a token runs in a worker thread, so the event loop never waits for scrypt.
Without an auth file the hub lets every agent in and enforces only the limits given as flags.
This module decides; the hub (`latentwire.hub.core`) asks it and applies the answers.

What is refused, and how (one operation, not the session, so an authorised agent that
makes one mistake keeps its queued deliveries and in-flight publishes; nothing is routed):

* no token, a wrong one, or an agent the file does not list: the hello is refused with
  ``UNAUTHENTICATED`` and the connection closed;
* a publish, subscription or direct message outside the agent's ACL: that one request is
  refused with ``PERMISSION_DENIED`` (a hello whose resumed subscriptions are outside it is
  refused as a whole);
* a message above the agent's size limit: ``PAYLOAD_TOO_LARGE``; above its publish rate or
  subscription count: ``RESOURCE_EXHAUSTED``.

An agent may always answer a request it was sent (the reply goes back to the requester with
the request's correlation id), even when ``send`` does not name the requester.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import json
import logging
import secrets
import time
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StrictBool,
    ValidationError,
    field_validator,
)

from latentwire._message import message_size
from latentwire._proto import bus_pb2 as pb
from latentwire._topics import AGENT_ID, validate_filter
from latentwire.errors import (
    ConfigError,
    InvalidTopic,
    LimitExceeded,
    MessageTooLarge,
    PermissionDenied,
    Unauthenticated,
)

from .tokens import hash_token, parse_hash, verify_token

log = logging.getLogger("latentwire.hub")

# Reply permissions kept per session (requests it was sent and has not answered yet).
MAX_REPLY_GRANTS = 4096
# Failed logins must not starve good ones (`LoginThrottle`): token checks running at once (each
# is scrypt: tens of ms and 16 MiB), the first backoff of an address after a failed check (it
# doubles per failure, up to the cap), addresses remembered, and the longest a hello waits for
# its turn before it is refused.
MAX_CONCURRENT_CHECKS = 4
LOGIN_BACKOFF, LOGIN_BACKOFF_MAX = 0.05, 2.0
MAX_LOGIN_PEERS = 4096
LOGIN_WAIT = 10.0


# -- the auth file -------------------------------------------------------------------------


class Limits(BaseModel):
    """Per-session limits; None leaves a limit off (or to the default it overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_message_bytes: PositiveInt | None = None  # largest message (header + payload)
    publish_rate: PositiveFloat | None = None  # publishes per second, sustained
    publish_burst: PositiveInt | None = None  # publishes allowed at once (default: 1 s of rate)
    max_subscriptions: PositiveInt | None = None  # topic filters held at once

    def over(self, base: Limits) -> Limits:
        """These limits, with ``base``'s values where these leave one unset."""
        return Limits(**{**base.model_dump(), **self.model_dump(exclude_none=True)})


class AgentRule(BaseModel):
    """What one agent may do. Empty lists allow nothing of that kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_hash: str
    publish: list[str] = Field(default_factory=list)  # topic patterns it may publish to
    subscribe: list[str] = Field(default_factory=list)  # patterns its filters must lie within
    send: list[str] = Field(default_factory=list)  # agent ids (fnmatch globs) it may message
    limits: Limits = Field(default_factory=Limits)
    admin: StrictBool = False  # its token opens the admin API and the dashboard (hub/admin.py)

    @field_validator("token_hash")
    @classmethod
    def _hash_format(cls, value: str) -> str:
        parse_hash(value)
        return value

    @field_validator("publish", "subscribe")
    @classmethod
    def _filters(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                validate_filter(value)
            except InvalidTopic as exc:
                raise ValueError(str(exc)) from None
        return values

    @field_validator("send")
    @classmethod
    def _globs(cls, values: list[str]) -> list[str]:
        if any(not v or not v.strip() for v in values):
            raise ValueError("agent patterns must not be empty")
        return values


class Defaults(BaseModel):
    """Settings that apply to every agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: Limits = Field(default_factory=Limits)


class AuthFile(BaseModel):
    """The parsed auth file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    agents: dict[str, AgentRule]

    @field_validator("agents")
    @classmethod
    def _agent_ids(cls, agents: dict[str, AgentRule]) -> dict[str, AgentRule]:
        if not agents:
            raise ValueError("lists no agents, so no one could connect")
        for name in agents:
            if not AGENT_ID.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid agent id (1-128 of A-Z a-z 0-9 . _ : @ -)")
        return agents


def load_auth_file(path: str | Path) -> AuthFile:
    """Read and validate an auth file (``.toml`` or ``.json``); raises `ConfigError` naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read auth file {path}: {exc}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"auth file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"auth file {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"auth file {path} must hold a table/object at the top, not {type(data).__name__}")
    try:
        return AuthFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"auth file {path}: {problems}") from None


# -- enforcement ---------------------------------------------------------------------------


def filter_within(pattern: str, flt: str) -> bool:
    """Whether every topic the subscription filter ``flt`` matches also matches ``pattern``."""
    p, f = pattern.split("/"), flt.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(f) or f[i] == "#":
            return False
        if level != "+" and level != f[i]:
            return False  # a literal level covers only the same literal (not '+')
    return len(p) == len(f)


class _Bucket:
    """A token bucket: ``rate`` publishes per second with bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> float:
        """Take one token; returns 0, or the seconds until one is available (nothing taken)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Guard:
    """What one session may do; the hub asks it before accepting each request.

    ``rule`` None means no auth file: every topic and recipient is allowed, limits still hold.
    """

    def __init__(self, agent: str, rule: AgentRule | None, limits: Limits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.rule = rule
        self.limits = limits
        self._bucket = None
        if limits.publish_rate:
            burst = limits.publish_burst or max(1, round(limits.publish_rate))
            self._bucket = _Bucket(limits.publish_rate, burst, clock)
        self._replies: OrderedDict[tuple[str, str], None] = OrderedDict()

    def check_publish(self, env: pb.Envelope, payload_len: int) -> None:
        """Raise if this session may not publish ``env`` now (size, ACL, then rate)."""
        cap = self.limits.max_message_bytes
        if cap is not None and (size := message_size(env, payload_len)) > cap:
            raise MessageTooLarge(size, cap, f"message of {size} bytes exceeds agent {self.agent!r}'s "
                                             f"max_message_bytes={cap}")
        reply = None
        if self.rule is not None:
            if env.recipient:
                reply = self._check_send(env)
            elif not any(filter_within(p, env.topic) for p in self.rule.publish):
                raise PermissionDenied(f"agent {self.agent!r} may not publish to {env.topic!r} "
                                       f"(allowed: {self.rule.publish or 'none'})")
        if self._bucket is not None and (wait := self._bucket.take()):
            raise LimitExceeded(f"agent {self.agent!r} is above its publish rate of "
                                f"{self.limits.publish_rate:g}/s (burst {self._bucket.burst}); "
                                f"retry in {wait:.3g} s")
        if reply is not None:
            del self._replies[reply]  # one reply per request (kept if the rate refused it)

    def _check_send(self, env: pb.Envelope) -> tuple[str, str] | None:
        """Raise unless ``env`` may go to its recipient; the reply permission it uses, if any."""
        assert self.rule is not None
        if env.correlation_id and not env.reply_to:
            key = (env.recipient, env.correlation_id)
            if key in self._replies:
                return key
        if not any(fnmatch.fnmatchcase(env.recipient, g) for g in self.rule.send):
            raise PermissionDenied(f"agent {self.agent!r} may not send direct messages to "
                                   f"{env.recipient!r} (allowed: {self.rule.send or 'none'})")
        return None

    def check_subscribe(self, filters: Iterable[str], held: set[str]) -> None:
        """Raise if this session may not hold ``held`` plus ``filters``."""
        filters = list(filters)
        if self.rule is not None:
            for f in filters:
                if not any(filter_within(p, f) for p in self.rule.subscribe):
                    raise PermissionDenied(f"agent {self.agent!r} may not subscribe to {f!r} "
                                           f"(allowed: {self.rule.subscribe or 'none'})")
        cap = self.limits.max_subscriptions
        if cap is not None and len(held | set(filters)) > cap:
            raise LimitExceeded(f"agent {self.agent!r} may hold at most {cap} subscriptions; "
                                f"this would make {len(held | set(filters))}")

    def renewed(self, rule: AgentRule | None, limits: Limits) -> Guard:
        """A guard with a new rule and limits that keeps this one's open reply permissions."""
        guard = Guard(self.agent, rule, limits)
        guard._replies = self._replies
        return guard

    def grant_reply(self, requester: str, correlation_id: str) -> None:
        """This session was sent a request: let it answer ``requester`` once."""
        self._replies[(requester, correlation_id)] = None
        if len(self._replies) > MAX_REPLY_GRANTS:
            self._replies.popitem(last=False)


class _Peer:
    """One address's login state: its lock (one check at a time) and its recent failures."""

    __slots__ = ("lock", "failures")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.failures = 0


class LoginThrottle:
    """Keeps failed logins from starving good ones.

    Token checks run in worker threads, at most ``concurrency`` at once, and one at a time per
    peer address. After a failed check, the address's next check first waits ``backoff``
    seconds, doubling with each further failure up to ``backoff_max``; a success resets it.
    So a flood of wrong tokens from one address queues behind itself, and a login from another
    address takes the next free slot. ``max_peers`` addresses are remembered (the least recently
    seen idle one is forgotten first). A hello that waited ``wait`` seconds for its turn is
    refused with `LimitExceeded`. Addresses are the transport's (`Connection.peer_address`);
    a connection without one (in process) only takes a slot.
    """

    def __init__(self, concurrency: int = MAX_CONCURRENT_CHECKS, *, backoff: float = LOGIN_BACKOFF,
                 backoff_max: float = LOGIN_BACKOFF_MAX, max_peers: int = MAX_LOGIN_PEERS,
                 wait: float = LOGIN_WAIT) -> None:
        self.backoff, self.backoff_max, self.max_peers, self.wait = backoff, backoff_max, max_peers, wait
        self._slots = asyncio.Semaphore(concurrency)
        self._peers: OrderedDict[str, _Peer] = OrderedDict()

    def failures(self, peer: str) -> int:
        """Consecutive failed checks from ``peer`` that are remembered."""
        state = self._peers.get(peer)
        return state.failures if state is not None else 0

    def __len__(self) -> int:
        return len(self._peers)

    async def check(self, peer: str | None, verify: Callable[[], bool]) -> bool:
        """Run the blocking token check ``verify`` in a worker thread when its turn comes; its result."""
        state = self._remember(peer) if peer else None
        held = False
        try:
            async with asyncio.timeout(self.wait):
                if state is not None:
                    await state.lock.acquire()
                    held = True
                    if state.failures:
                        await asyncio.sleep(min(self.backoff * 2 ** (state.failures - 1), self.backoff_max))
                await self._slots.acquire()
        except BaseException as exc:  # timed out or cancelled while waiting: give the lock back
            if held:
                state.lock.release()
            if isinstance(exc, TimeoutError):
                raise LimitExceeded(f"too many logins waiting from {peer or 'this process'}; "
                                    "retry later") from None
            raise
        # The slot is given back when the thread ends, even if this hello is cancelled meanwhile,
        # so no more than `concurrency` checks ever run at once.
        work = asyncio.ensure_future(asyncio.to_thread(verify))
        work.add_done_callback(lambda _: self._slots.release())
        try:
            ok = await asyncio.shield(work)
            if state is not None:
                state.failures = 0 if ok else state.failures + 1
            return ok
        finally:
            if state is not None:
                state.lock.release()

    def _remember(self, peer: str) -> _Peer:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer()
            if len(self._peers) > self.max_peers:
                idle = next((k for k, v in self._peers.items() if not v.lock.locked() and v is not state),
                            None)
                if idle is not None:
                    del self._peers[idle]
        self._peers.move_to_end(peer)
        return state


class Policy:
    """The hub's security settings: an optional auth file and the default per-session limits."""

    def __init__(self, auth: AuthFile | None = None, limits: Limits | None = None) -> None:
        self.auth = auth
        self.limits = (auth.defaults.limits if auth else Limits()).over(limits or Limits())
        self._decoy = self._make_decoy(auth) if auth else ""

    @staticmethod
    def _make_decoy(auth: AuthFile) -> str:
        # Checked for unknown agents, with the cost parameters of a real entry, so a wrong
        # name takes as long as a wrong token.
        n, r, p, _, _ = parse_hash(next(iter(auth.agents.values())).token_hash)
        return hash_token(secrets.token_hex(8), n=n, r=r, p=p)

    @classmethod
    def from_file(cls, path: str | Path | None, limits: Limits | None = None) -> Policy:
        """A policy from ``--auth-file`` (None: no authentication) and flag limits."""
        return cls(load_auth_file(path) if path else None, limits)

    @property
    def authenticates(self) -> bool:
        """Whether agents must present a token."""
        return self.auth is not None

    async def admit(self, agent: str, token: str, *, logins: LoginThrottle | None = None,
                    peer: str | None = None) -> Guard:
        """The guard for a new session of ``agent``; raises `Unauthenticated` for a bad token.

        With ``logins``, the token check waits its turn there (by ``peer`` address), and a
        hello that waited too long raises `LimitExceeded`."""
        if self.auth is None:
            return Guard(agent, None, self.limits)
        rule = self.auth.agents.get(agent)
        if not token:
            raise Unauthenticated(f"agent {agent!r} gave no token; this hub requires one")
        check = functools.partial(verify_token, token, rule.token_hash if rule else self._decoy)
        ok = await (logins.check(peer, check) if logins is not None else asyncio.to_thread(check))
        if rule is None or not ok:
            # One reason for both, so a caller cannot probe which agent ids exist.
            raise Unauthenticated(f"invalid token for agent {agent!r}")
        return Guard(agent, rule, rule.limits.over(self.limits))

    def admits_again(self, agent: str, previous: Policy) -> bool:
        """Whether a live session that ``previous`` admitted may stay under this policy: its
        agent is still listed and its token hash did not change."""
        if self.auth is None:
            return True
        rule = self.auth.agents.get(agent)
        before = previous.auth.agents.get(agent) if previous.auth else None
        return rule is not None and (before is None or before.token_hash == rule.token_hash)

    def find_admin(self, token: str) -> str | None:
        """The agent with ``admin = true`` whose token this is, or None (scrypt per admin agent:
        call it off the event loop). Only meaningful with an auth file."""
        if self.auth is None or not token:
            return None
        for agent, rule in self.auth.agents.items():
            if rule.admin and verify_token(token, rule.token_hash):
                return agent
        return None

    def renew(self, guard: Guard) -> Guard:
        """``guard`` under this policy's rule and limits for its agent, keeping its open reply
        permissions."""
        rule = self.auth.agents.get(guard.agent) if self.auth else None
        return guard.renewed(rule, rule.limits.over(self.limits) if rule else self.limits)


class PolicyHolder(Protocol):
    """What `reload_policy` needs of a hub (`latentwire.hub.Hub` is one)."""

    def apply_policy(self, policy: Policy) -> list[str]:
        """Put ``policy`` in force; returns the agents it disconnected."""


async def reload_policy(hub: PolicyHolder, path: str | Path, limits: Limits | None = None) -> bool:
    """Load the auth file at ``path`` again and apply it to a running hub (the daemon does this
    on SIGHUP); returns False, keeping the old policy, if the file is bad.

    Sessions of agents that are gone from the file, or whose token hash changed, are
    disconnected (they must authenticate again); the others get their new ACLs and limits at
    once. New connections are checked against the new file.
    """
    try:
        policy = await asyncio.to_thread(Policy.from_file, path, limits)
    except ConfigError as exc:
        log.error("auth file not reloaded, the old one stays in force: %s", exc)
        return False
    assert policy.auth is not None
    cut = hub.apply_policy(policy)
    log.warning("auth file %s reloaded: %d agents; disconnected %s", path, len(policy.auth.agents),
                ", ".join(repr(a) for a in cut) or "none")
    return True
