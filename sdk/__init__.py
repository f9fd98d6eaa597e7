"""latentwire: agents that talk in latents over a hub-and-spoke bus.

Quick start (an embedded hub, no server to start)::

    import asyncio, numpy as np, latentwire

    async def main():
        async with latentwire.connect(agent="alice") as bus:
            async with bus.subscribe("thoughts/#") as sub:
                await bus.publish("thoughts/alice", latent=np.ones((8, 64), np.float32))
                msg = await sub.receive(timeout=5)
                print(msg.sender, msg.latent)

    asyncio.run(main())

torch is not imported by ``import latentwire``; tensors cross the SDK as numpy arrays or
torch tensors, whichever the caller gave.
"""

from ._agent import Agent, Runtime, on, on_direct
from ._bus import Bus, BusState, Subscription
from ._connect import connect
from ._latent import DTYPES, Latent
from ._message import Control, Message
from ._version import __version__
from .errors import (
    AlreadyConnected,
    AuthError,
    BusClosed,
    BusError,
    ConfigError,
    ConnectError,
    InvalidMessage,
    InvalidTensor,
    InvalidTopic,
    LatentwireError,
    LimitExceeded,
    MessageTooLarge,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    Unauthenticated,
    Unavailable,
    UnknownAgent,
)

__all__ = [
    "DTYPES",
    "Agent",
    "AlreadyConnected",
    "AuthError",
    "Bus",
    "BusClosed",
    "BusError",
    "BusState",
    "ConfigError",
    "ConnectError",
    "Control",
    "InvalidMessage",
    "InvalidTensor",
    "InvalidTopic",
    "Latent",
    "LatentwireError",
    "LimitExceeded",
    "Message",
    "MessageTooLarge",
    "PermissionDenied",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "Runtime",
    "Subscription",
    "Unauthenticated",
    "Unavailable",
    "UnknownAgent",
    "__version__",
    "connect",
    "on",
    "on_direct",
]
