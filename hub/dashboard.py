"""The hub's web dashboard (``latentwire hub --dashboard-port``): live agents, topics, rates and
queue depths, and for a picked topic its recent latents drawn as heatmaps.

One HTML page with inline JS and a canvas (`dashboard.html`, no build step) reads server-sent
events from ``/events``: a ``state`` event every ``interval`` seconds, and ``latents`` events
with new heatmaps of the topic named by ``?topic=`` while the page watches it (`TrafficStats`
keeps latents only for watched topics). ``/api/state`` and ``/api/recent?filter=F`` return the
same data as JSON for scripts.

The server is the standard library's asyncio streams; requests are read with bounds (head
size, time, connections), parsed with `http.client`, and answered with ``Connection: close``
except the event stream. Access is `AdminGate`'s: open without an auth file; with one, the
token of an agent with ``admin = true`` as ``Authorization: Bearer <token>``, or once as
``?token=<token>``, which sets an HttpOnly cookie and redirects to the same page without it.
Anything else gets 401, with nothing about the hub in the answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import http.client
import io
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from google.protobuf.message import Message as ProtoMessage

from latentwire.errors import AuthError, ConfigError, InvalidTopic, LimitExceeded

from .admin import AdminGate, bearer
from .stats import LatentView, TrafficStats

if TYPE_CHECKING:
    from .auth import Policy
    from .core import Hub

log = logging.getLogger("latentwire.hub")

HEAD_LIMIT = 16 * 1024  # bytes of request line + headers
HEAD_TIMEOUT = 10.0  # seconds a client has to send its request head
WRITE_TIMEOUT = 10.0  # seconds a write may wait for a slow client before it is dropped
MAX_CLIENTS = 64  # connections at once (each open page holds one event stream)
COOKIE = "latentwire_dashboard"
COOKIE_TTL = 12 * 3600.0  # seconds a dashboard login lasts
MAX_LOGINS = 256
TOPICS_SHOWN = 100
# The page runs only its own inline script and talks only to this server.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Refused(Exception):
    """A request answered with an error status and a one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


@dataclasses.dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: http.client.HTTPMessage


class Dashboard:
    """Serves the dashboard of ``hub``; `start` binds it, `stop` ends it and its event streams."""

    def __init__(self, hub: Hub, *, interval: float = 1.0) -> None:
        self.hub = hub
        self.stats = TrafficStats.attach(hub)
        self.gate = AdminGate(hub)
        self.interval = interval
        self._logins: OrderedDict[str, tuple[float, Policy]] = OrderedDict()  # cookie -> expiry, policy
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task] = set()
        self._stopping = False
        self._page = resources.files(__package__).joinpath("dashboard.html").read_bytes()

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the bound port. Raises
        `ConfigError` naming ``--dashboard-port`` when it cannot (e.g. the port is in use)."""
        try:
            self._server = await asyncio.start_server(self._client, host, port, limit=HEAD_LIMIT)
        except OSError as exc:
            raise ConfigError(f"--dashboard-port {port}: cannot serve the dashboard on {host}:{port}: "
                              f"{exc.strerror or exc}") from exc
        bound = self._server.sockets[0].getsockname()[1]
        log.info("dashboard on http://%s:%d/", host, bound)
        return bound

    async def stop(self) -> None:
        """Stop listening and end every open connection."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- one connection -------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > MAX_CLIENTS:
                raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, "too many dashboard connections; retry later")
            request = await self._read_request(reader)
            await self._route(request, writer)
        except _Refused as exc:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await self._send(writer, exc.status, f"{exc.status.value} {exc.status.phrase}: {exc.reason}\n",
                                 "text/plain; charset=utf-8", exc.headers)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            task.uncancel()  # ended by stop(): a normal end, not an error for asyncio to report
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                           f"request head above {HEAD_LIMIT} bytes") from None
        line, _, rest = head.partition(b"\r\n")
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refused(HTTPStatus.BAD_REQUEST, "expected 'GET /path HTTP/1.1'")
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            raise _Refused(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not served; use GET",
                           {"Allow": "GET, HEAD"})
        try:
            headers = http.client.parse_headers(io.BytesIO(rest))
        except http.client.HTTPException as exc:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"bad headers ({exc.__class__.__name__})") from None
        url = urlsplit(target)
        try:
            query = {k: v[-1] for k, v in parse_qs(url.query, max_num_fields=8).items()}
        except ValueError:
            raise _Refused(HTTPStatus.BAD_REQUEST, "too many query fields") from None
        return _Request(method, url.path or "/", query, headers)

    async def _route(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        policy = self.hub.policy
        by_query = await self._authorize(request)
        if request.path in ("/", "/index.html"):
            if by_query:  # ?token= worked: keep a login in a cookie, drop the token from the address
                login = self._login()
                query = urlencode({k: v for k, v in request.query.items() if k != "token"})
                cookie = (f"{COOKIE}={login}; Path=/; Max-Age={int(COOKIE_TTL)}; HttpOnly; "
                          "SameSite=Strict")
                await self._send(writer, HTTPStatus.SEE_OTHER, "", "text/plain",
                                 {"Location": "/" + (f"?{query}" if query else ""), "Set-Cookie": cookie})
                return
            await self._send(writer, HTTPStatus.OK, self._page, "text/html; charset=utf-8",
                             head_only=request.method == "HEAD")
        elif request.path == "/api/state":
            await self._send_json(writer, self.state(), request.method == "HEAD")
        elif request.path == "/api/recent":
            try:
                limit = max(0, int(request.query.get("limit", "50")))
                views = self.stats.recent(request.query.get("filter", "#"), limit)
            except (ValueError, InvalidTopic) as exc:
                raise _Refused(HTTPStatus.BAD_REQUEST, f"filter/limit: {exc}") from None
            await self._send_json(writer, [_plain(v) for v in views], request.method == "HEAD")
        elif request.path == "/events":
            await self._events(writer, request.query.get("topic", ""), policy)
        else:
            raise _Refused(HTTPStatus.NOT_FOUND, f"no page at {request.path}; the dashboard is at /")

    async def _authorize(self, request: _Request) -> bool:
        """Raise 401 unless the request may look; returns whether ``?token=`` let it in."""
        if self.gate.open:
            return False
        unauthorized = _Refused(
            HTTPStatus.UNAUTHORIZED, "this hub's dashboard needs the token of an agent with admin = true: "
            "open it as /?token=TOKEN or send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})
        if self._cookie_valid(request.headers.get("Cookie")):
            return False
        header = bearer(request.headers.get("Authorization"))
        try:
            await self.gate.check(header or request.query.get("token"))
        except AuthError:
            raise unauthorized from None
        return header is None

    def _login(self) -> str:
        """A new login: a random cookie value standing for a checked token (never the token)."""
        login = secrets.token_urlsafe(32)
        self._logins[login] = (time.monotonic() + COOKIE_TTL, self.hub.policy)
        while len(self._logins) > MAX_LOGINS:
            self._logins.popitem(last=False)
        return login

    def _cookie_valid(self, header: str | None) -> bool:
        if not header:
            return False
        try:
            morsel = SimpleCookie(header).get(COOKIE)
        except CookieError:
            return False
        entry = self._logins.get(morsel.value) if morsel is not None else None
        # A login ends when it expires or the auth file is reloaded (the admin may be gone).
        return entry is not None and entry[0] > time.monotonic() and entry[1] is self.hub.policy

    # -- data ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Hub totals, sessions and the busiest topics, JSON-ready (the admin API's fields)."""
        return {"hub": _plain(self.stats.hub_view()),
                "sessions": [_plain(v) for v in self.stats.sessions()],
                "topics": [_plain(v) for v in self.stats.topics(TOPICS_SHOWN)],
                "now": time.time()}

    async def _events(self, writer: asyncio.StreamWriter, topic: str, policy: Policy) -> None:
        watch = None
        if topic:
            try:
                watch = self.stats.watch(topic)
            except InvalidTopic as exc:
                raise _Refused(HTTPStatus.BAD_REQUEST, f"topic: {exc}") from None
            except LimitExceeded as exc:
                raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
        try:
            await self._write(writer, _head(HTTPStatus.OK, "text/event-stream", {"X-Accel-Buffering": "no"})
                              + b"retry: 2000\n\n")
            seen = 0
            # The stream ends when the auth file is reloaded; the browser reconnects and is checked again.
            while self.hub.policy is policy or self.gate.open:
                chunk = _event("state", self.state())
                if watch is not None and (new := watch.since(seen)):
                    seen = new[-1].seq
                    chunk += _event("latents", {"topic": watch.filter, "latents": [_latent_json(v) for v in new]})
                await self._write(writer, chunk)
                await asyncio.sleep(self.interval)
        finally:
            if watch is not None:
                self.stats.unwatch(watch)

    # -- writing -------------------------------------------------------------------------------

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    async def _send(self, writer: asyncio.StreamWriter, status: HTTPStatus, body: bytes | str,
                    content_type: str, headers: dict[str, str] | None = None, head_only: bool = False) -> None:
        body = body.encode("utf-8") if isinstance(body, str) else body
        extra = {"Content-Length": str(len(body)), **(headers or {})}
        await self._write(writer, _head(status, content_type, extra) + (b"" if head_only else body))

    async def _send_json(self, writer: asyncio.StreamWriter, data: Any, head_only: bool) -> None:
        await self._send(writer, HTTPStatus.OK, json.dumps(data), "application/json", head_only=head_only)


def _head(status: HTTPStatus, content_type: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", f"Content-Type: {content_type}",
             "Connection: close", *(f"{k}: {v}" for k, v in {**_SECURITY_HEADERS, **headers}.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _plain(message: ProtoMessage) -> dict[str, Any]:
    """A flat admin API message as JSON values; numbers stay numbers (protobuf's own JSON
    mapping writes 64-bit integers as strings)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        out[field.name] = dict(value) if isinstance(value, Mapping) else list(value) if field.is_repeated else value
    return out


def _latent_json(view: LatentView) -> dict[str, Any]:
    out = dataclasses.asdict(view)
    out["cells"] = base64.b64encode(view.cells).decode("ascii")
    return out
