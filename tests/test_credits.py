"""The client's publish window: messages and bytes, first come first served."""

from __future__ import annotations

import asyncio

import pytest

from latentwire._credits import Credits


async def test_window_in_bytes_and_messages_is_fifo() -> None:
    credits = Credits(messages=3, nbytes=100)
    await credits.acquire(60)
    order: list[str] = []

    async def take(name: str, size: int) -> None:
        await credits.acquire(size)
        order.append(name)

    big = asyncio.create_task(take("big", 80))  # does not fit beside 60
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # would fit, but must not overtake
    await asyncio.sleep(0.01)
    assert order == []
    credits.release(60)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and (credits.used_messages, credits.used_bytes) == (2, 90)


async def test_one_message_always_fits_and_cancel_gives_credit_back() -> None:
    credits = Credits(messages=1, nbytes=10)
    await credits.acquire(1000)  # larger than the byte window, but nothing else is in flight
    waiter = asyncio.create_task(credits.acquire(1))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    credits.release(1000)
    assert (credits.used_messages, credits.used_bytes) == (0, 0)
    await asyncio.wait_for(credits.acquire(5), 1)


async def test_wake_all_lets_waiters_through() -> None:
    credits = Credits(messages=1, nbytes=10)
    await credits.acquire(5)
    waiters = [asyncio.create_task(credits.acquire(5)) for _ in range(3)]
    await asyncio.sleep(0)
    credits.wake_all()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
