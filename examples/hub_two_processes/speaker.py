"""The speaking process: publishes text and latents, then asks the listener for them back.

Needs a hub daemon and a running listener (see ``listener.py``)::

    python examples/hub_two_processes/speaker.py --url grpc://127.0.0.1:7878

Exits 0 when the latents came back bit-exact, 1 otherwise.
"""

import argparse
import asyncio
import os
import sys

import numpy as np

import latentwire


async def speak(url: str) -> bool:
    async with latentwire.connect(url, agent="speaker") as bus:
        await bus.publish("chat/speaker", "hello from another process")
        rng = np.random.default_rng(7)
        sent = [rng.standard_normal((8, 64), dtype=np.float32) for _ in range(3)]
        for i, latent in enumerate(sent):
            # publish() returns once the hub has queued the message for every subscriber.
            await bus.publish(f"latents/speaker/{i}", latent=latent)
        await bus.publish("chat/speaker", "over")
        print(f"speaker: published 2 texts and {len(sent)} latents", flush=True)

        reply = await bus.request("listener", "send back what you got", timeout=10)
        back = reply.latent.numpy()
        exact = back.tobytes() == np.stack(sent).tobytes()
        print(f"speaker: reply from {reply.sender}: latent {reply.latent.dtype} {reply.latent.shape}, "
              f"{'bit-exact' if exact else 'DIFFERENT'}", flush=True)
        return exact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("LATENTWIRE_URL"),
                        help="hub URL, e.g. grpc://127.0.0.1:7878 (default: $LATENTWIRE_URL)")
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url grpc://HOST:PORT or set LATENTWIRE_URL "
                     "(start a hub with: latentwire hub --port 7878)")
    return 0 if asyncio.run(speak(args.url)) else 1


if __name__ == "__main__":
    sys.exit(main())
