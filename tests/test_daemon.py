"""The hub daemon as a user runs it: a process, SIGTERM, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import latentwire
from latentwire.hub.server import serve

pytestmark = pytest.mark.timeout(90)


def start_daemon(*flags: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentwire.cli", "hub", "--port", "0", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = proc.stdout.readline()
    assert line.startswith("latentwire hub listening on grpc://"), line
    return proc, line.rsplit(" ", 1)[1].strip()


async def test_sigterm_drains_queued_messages_then_exits() -> None:
    proc, url = start_daemon("--drain-timeout", "10")
    try:
        async with latentwire.connect(url, agent="p") as p, \
                latentwire.connect(url, agent="c", receive_window=4, reconnect_timeout=0.5) as c:
            sub = await c.subscribe("work")
            for i in range(20):
                await p.publish("work", latent=np.full(1000, i, np.int32), wait=False)
            await p.flush()  # all 20 are in the hub; only 4 reached the consumer so far
            proc.send_signal(signal.SIGTERM)
            got = [int((await sub.receive(timeout=10)).latent.numpy()[0]) for _ in range(20)]
            assert got == list(range(20))
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "latentwire hub stopped: drained; published=20 delivered=20" in out
    finally:
        proc.kill()


async def test_bad_flags_exit_with_a_clear_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "latentwire.cli", "hub", "--port", "0", "--publish-window", "0"],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "publish_window must be a positive number, got 0" in proc.stdout


async def test_clients_reconnect_to_a_restarted_hub() -> None:
    server = await serve(port=0)
    port = server.port
    async with latentwire.connect(server.url, agent="p", reconnect_timeout=10) as p, \
            latentwire.connect(server.url, agent="c", reconnect_timeout=10) as c:
        sub = await c.subscribe("after/#")
        await p.publish("after/one", "before restart")
        assert (await sub.receive(timeout=5)).text == "before restart"
        await server.stop(grace=0.5)
        server = await serve(port=port)  # a new hub: no sessions, no subscriptions
        try:
            # The consumer's hello re-establishes its subscription, so this reaches it.
            async with asyncio.timeout(15):
                while True:
                    try:
                        await p.publish("after/two", "after restart")
                        msg = await sub.receive(timeout=0.5)
                        break
                    except TimeoutError:
                        continue  # the consumer may not be back yet; publish again
            assert msg.text == "after restart" and msg.sender == "p"
        finally:
            await server.stop(grace=0.5)
