"""The listening process: subscribes, reads until the speaker says "over", then answers its request.

Needs a hub daemon (``latentwire hub --port 7878``)::

    python examples/hub_two_processes/listener.py --url grpc://127.0.0.1:7878

``--url`` defaults to ``$LATENTWIRE_URL``. ``run.py`` next to this file starts a hub, this
listener and the speaker for you.
"""

import argparse
import asyncio
import os

import numpy as np

import latentwire

TIMEOUT = 30.0  # seconds to wait for each message before giving up


async def listen(url: str) -> None:
    async with latentwire.connect(url, agent="listener") as bus:
        async with bus.subscribe("chat/+", "latents/#") as sub:
            # Subscribed on the hub now: a message published from here on reaches us.
            print(f"listener: ready on {url}", flush=True)
            latents = []
            while True:
                msg = await sub.receive(timeout=TIMEOUT)
                if msg.latent is not None:
                    latents.append(msg.latent.numpy())
                    print(f"listener: {msg.topic} from {msg.sender}: latent {msg.latent.dtype} "
                          f"{msg.latent.shape}", flush=True)
                else:
                    print(f"listener: {msg.topic} from {msg.sender}: {msg.text!r}", flush=True)
                    if msg.text == "over":
                        break
        request = await bus.inbox().receive(timeout=TIMEOUT)
        print(f"listener: request from {request.sender}: {request.text!r}", flush=True)
        # Send every latent back, stacked, so the speaker can compare them with what it sent.
        await bus.reply(request, latent=np.stack(latents))
        print(f"listener: replied with {len(latents)} latents; done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("LATENTWIRE_URL"),
                        help="hub URL, e.g. grpc://127.0.0.1:7878 (default: $LATENTWIRE_URL)")
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url grpc://HOST:PORT or set LATENTWIRE_URL "
                     "(start a hub with: latentwire hub --port 7878)")
    asyncio.run(listen(args.url))


if __name__ == "__main__":
    main()
