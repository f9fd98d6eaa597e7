"""The admin API (``latentwire.v1.Admin``, protos/latentwire/v1/admin.proto): sessions, topics,
hub totals and recent message headers for operators, on the hub's gRPC port, plus standard gRPC
server reflection.

Who may ask: anyone when the hub has no auth file; with one, only the holder of the token of
an agent whose entry says ``admin = true``. `AdminGate` decides (the dashboard asks it too);
`AdminInterceptor` applies it to every admin call before the servicer runs, so a refused
caller learns nothing but the refusal. The servicer is thin: `TrafficStats` answers in the API's
own messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_reflection.v1alpha import reflection

from latentwire._proto import admin_pb2 as apb
from latentwire.errors import AuthError, InvalidTopic, PermissionDenied, Unauthenticated

from .stats import TrafficStats

if TYPE_CHECKING:
    from .auth import Policy
    from .core import Hub

SERVICE = "latentwire.v1.Admin"
TOKEN_CACHE = 64  # tokens remembered after a successful check (as SHA-256 digests)
TOKEN_TTL = 300.0  # seconds a remembered token stays valid without a new scrypt check
CHECKS_AT_ONCE = 2  # scrypt checks running at once (each takes ~100 ms and 16 MiB)


class AdminGate:
    """Decides whether a token may see the hub's operator data.

    A successful check is remembered for ``TOKEN_TTL`` s (by the token's SHA-256), so a
    dashboard refreshing every second does not cost a scrypt each time; reloading the auth
    file (a new `Policy`) forgets every remembered token.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._known: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._policy: Policy | None = None
        self._checks = asyncio.Semaphore(CHECKS_AT_ONCE)

    @property
    def open(self) -> bool:
        """True when the hub has no auth file: everyone may look."""
        return not self.hub.policy.authenticates

    async def check(self, token: str | None) -> str:
        """The admin agent ``token`` belongs to ('' on an open hub); raises `Unauthenticated`
        without a token and `PermissionDenied` for any token that is not an admin's."""
        policy = self.hub.policy
        if not policy.authenticates:
            return ""
        if not token:
            raise Unauthenticated("the admin API needs the token of an agent with admin = true in the "
                                  "hub's auth file (--token or $LATENTWIRE_TOKEN)")
        if self._policy is not policy:  # reloaded: tokens may have been rotated or demoted
            self._known.clear()
            self._policy = policy
        key = hashlib.sha256(token.encode("utf-8")).digest()
        now = time.monotonic()
        known = self._known.get(key)
        if known is not None and known[1] > now:
            return known[0]
        async with self._checks:
            agent = await asyncio.to_thread(policy.find_admin, token)
        if agent is None:
            raise PermissionDenied("this token does not belong to an agent with admin = true in the "
                                   "hub's auth file")
        if self._policy is policy:
            self._known[key] = (agent, now + TOKEN_TTL)
            while len(self._known) > TOKEN_CACHE:
                self._known.popitem(last=False)
        return agent


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None."""
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


_STATUS = {Unauthenticated: grpc.StatusCode.UNAUTHENTICATED, PermissionDenied: grpc.StatusCode.PERMISSION_DENIED}


class AdminInterceptor(grpc.aio.ServerInterceptor):
    """Checks the caller's bearer token (`AdminGate`) before any admin call reaches the servicer;
    every other service on the port passes untouched."""

    def __init__(self, gate: AdminGate) -> None:
        self.gate = gate

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not details.method.startswith(f"/{SERVICE}/"):
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        try:
            await self.gate.check(bearer(metadata.get("authorization")))
        except AuthError as exc:
            code, reason = _STATUS.get(type(exc), grpc.StatusCode.PERMISSION_DENIED), str(exc)

            async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> None:
                await context.abort(code, reason)

            return grpc.unary_unary_rpc_method_handler(refuse)
        return await continuation(details)


class AdminServicer:
    """Serves ``latentwire.v1.Admin`` from the hub's `TrafficStats`."""

    def __init__(self, hub: Hub) -> None:
        self.stats = TrafficStats.attach(hub)

    async def get_stats(self, request: apb.GetStatsRequest, context: Any) -> apb.HubInfo:
        return self.stats.hub_view()

    async def list_sessions(self, request: apb.ListSessionsRequest, context: Any) -> apb.ListSessionsResponse:
        return apb.ListSessionsResponse(sessions=self.stats.sessions())

    async def list_topics(self, request: apb.ListTopicsRequest, context: Any) -> apb.ListTopicsResponse:
        return apb.ListTopicsResponse(topics=self.stats.topics(request.limit))

    async def recent_messages(self, request: apb.RecentMessagesRequest,
                              context: grpc.aio.ServicerContext) -> apb.RecentMessagesResponse:
        try:
            return apb.RecentMessagesResponse(messages=self.stats.recent(request.filter or "#", request.limit))
        except InvalidTopic as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"filter: {exc}")

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a grpc.aio server."""
        methods = {
            "GetStats": (self.get_stats, apb.GetStatsRequest),
            "ListSessions": (self.list_sessions, apb.ListSessionsRequest),
            "ListTopics": (self.list_topics, apb.ListTopicsRequest),
            "RecentMessages": (self.recent_messages, apb.RecentMessagesRequest),
        }
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request.FromString,
                response_serializer=lambda response: response.SerializeToString())
            for name, (fn, request) in methods.items()
        })


def add_admin(server: grpc.aio.Server, hub: Hub, services: list[str]) -> None:
    """Add the admin service and gRPC reflection (describing ``services`` too) to ``server``.
    The server must have been made with an `AdminInterceptor`, which guards the admin calls."""
    server.add_generic_rpc_handlers((AdminServicer(hub).handler(),))
    reflection.enable_server_reflection([*services, SERVICE, reflection.SERVICE_NAME], server)
