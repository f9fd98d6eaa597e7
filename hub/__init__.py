"""The hub: routing, sessions and flow control (`Hub`), served over gRPC by `serve`; with a
`Journal` (SQLite) its sessions and accepted messages survive a crash or restart."""

from .core import Hub, HubConfig, HubStats, Session
from .journal import Journal, JournalError

__all__ = ["Hub", "HubConfig", "HubStats", "Journal", "JournalError", "Session"]
