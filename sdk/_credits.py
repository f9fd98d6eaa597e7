"""`Credits`: the publish window, in messages and in bytes, granted by the hub.

A publish takes one message credit and its size in byte credits, and gives them back when the
hub acknowledges it. Waiters are served first come, first served, so a large message is never
starved by smaller ones behind it; one message is always let through when nothing is in
flight, however large, or it could never be sent.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Credits:
    """A FIFO window of ``messages`` unacked publishes totalling at most ``nbytes`` bytes."""

    def __init__(self, messages: int, nbytes: int) -> None:
        self.messages = messages
        self.nbytes = nbytes
        self.used_messages = 0
        self.used_bytes = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    def _fits(self, size: int) -> bool:
        if self.used_messages == 0:
            return True
        return self.used_messages < self.messages and self.used_bytes + size <= self.nbytes

    def _take(self, size: int) -> None:
        self.used_messages += 1
        self.used_bytes += size

    async def acquire(self, size: int) -> None:
        """Wait until ``size`` bytes and one message fit in the window, then take them."""
        if not self._waiters and self._fits(size):
            self._take(size)
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((size, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(size)  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove((size, fut))
                self._grant()
            raise

    def release(self, size: int) -> None:
        """Give back one message and ``size`` bytes (the hub acknowledged a publish)."""
        self.used_messages -= 1
        self.used_bytes -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            size, fut = self._waiters.popleft()
            if not fut.done():
                self._take(size)
                fut.set_result(None)

    def wake_all(self) -> None:
        """Let every waiter through (the bus is closing; they will find it closed)."""
        while self._waiters:
            size, fut = self._waiters.popleft()
            if not fut.done():
                self._take(size)
                fut.set_result(None)
