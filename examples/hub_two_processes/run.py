"""Two processes talking through a hub daemon, all started (and stopped) by this script.

    python examples/hub_two_processes/run.py

It runs ``latentwire hub --port 0`` (a free port), reads the URL from the hub's
``latentwire hub listening on grpc://...`` line, starts ``listener.py`` and waits until it is
subscribed, runs ``speaker.py``, and finally stops the hub with SIGTERM (a graceful drain).
Exits 0 when both children succeeded.
"""

import asyncio
import os
import signal
import sys
from asyncio.subprocess import PIPE, Process
from pathlib import Path

HERE = Path(__file__).resolve().parent
LISTENING = "latentwire hub listening on "
STEP_TIMEOUT = 20.0  # seconds for any one step; nothing here should take more than a few


async def read_until(proc: Process, prefix: str, name: str) -> str:
    """Echo ``proc``'s output until a line starts with ``prefix``; return that line."""
    async with asyncio.timeout(STEP_TIMEOUT):
        while line := (await proc.stdout.readline()).decode():
            print(line, end="", flush=True)
            if line.startswith(prefix):
                return line.strip()
    raise RuntimeError(f"{name} exited without printing {prefix!r}")


async def echo(proc: Process) -> None:
    """Echo the rest of ``proc``'s output."""
    while line := (await proc.stdout.readline()).decode():
        print(line, end="", flush=True)


async def main() -> int:
    procs: list[Process] = []
    try:
        # The same as `latentwire hub --port 0`, without relying on the venv's bin/ being on PATH.
        hub = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "latentwire.cli", "hub", "--port", "0", stdout=PIPE)
        procs.append(hub)
        url = (await read_until(hub, LISTENING, "the hub")).removeprefix(LISTENING)
        env = {**os.environ, "LATENTWIRE_URL": url}

        listener = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "listener.py"), env=env, stdout=PIPE)
        procs.append(listener)
        await read_until(listener, "listener: ready", "the listener")
        listener_output = asyncio.create_task(echo(listener))

        speaker = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "speaker.py"), env=env, stdout=PIPE)
        procs.append(speaker)
        async with asyncio.timeout(STEP_TIMEOUT):
            await asyncio.gather(echo(speaker), listener_output)
            codes = {"speaker": await speaker.wait(), "listener": await listener.wait()}

        hub.send_signal(signal.SIGTERM)  # drain: queued messages are delivered, then it stops
        async with asyncio.timeout(STEP_TIMEOUT):
            await echo(hub)
            codes["hub"] = await hub.wait()
        print(f"run.py: exit codes {codes}", flush=True)
        return 0 if not any(codes.values()) else 1
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
