"""The hub: routing, sessions and flow control (`Hub`), served over gRPC by `serve`."""

from .core import Hub, HubConfig, HubStats, Session

__all__ = ["Hub", "HubConfig", "HubStats", "Session"]
