"""The latentwire quickstart: connect, publish and subscribe, direct messages, request/reply, agents.

Runs on an embedded hub (``inproc://``, no server needed)::

    python examples/quickstart.py

or against a hub daemon started with ``latentwire hub --port 7878``::

    LATENTWIRE_URL=grpc://127.0.0.1:7878 python examples/quickstart.py
"""

import asyncio

import numpy as np

import latentwire


class Doubler(latentwire.Agent):
    """An agent (id "doubler"): handlers are methods, declared with decorators."""

    @latentwire.on("notes/#")
    async def note(self, msg: latentwire.Message) -> None:
        print(f"doubler read {msg.topic}: {msg.text!r}")

    @latentwire.on_direct
    async def double(self, msg: latentwire.Message) -> np.ndarray:
        return msg.latent.numpy() * 2  # for a request, the return value is the reply


async def main() -> None:
    # connect() takes a URL; without one it uses $LATENTWIRE_URL, else inproc://.
    async with latentwire.connect(agent="alice") as alice, latentwire.connect(agent="bob") as bob:
        # Publish/subscribe: "+" matches one topic level, "#" all remaining levels.
        async with bob.subscribe("chat/+", "vision/#") as sub:
            await alice.publish("chat/alice", "hello, bob")
            frame = np.arange(12, dtype=np.float32).reshape(3, 4)
            await alice.publish("vision/cam0/frame", latent=frame)
            for _ in range(2):
                msg = await sub.receive(timeout=5)
                print(f"bob got {msg.topic} from {msg.sender}: {msg.body}")
            assert np.array_equal(msg.latent.numpy(), frame)  # the bytes arrive unchanged

        # A direct message goes to one agent's inbox, whatever it subscribed to.
        await alice.send("bob", "just for you")
        msg = await bob.inbox().receive(timeout=5)
        print(f"bob got a direct message from {msg.sender}: {msg.text!r}")

        # Request/reply by hand: bob answers one request from his inbox.
        async def answer_one() -> None:
            request = await bob.inbox().receive(timeout=5)
            await bob.reply(request, latent=request.latent.numpy().sum(axis=0))

        answering = asyncio.create_task(answer_one())
        reply = await alice.request("bob", latent=frame, timeout=5)
        await answering
        print(f"alice got bob's reply: {reply.latent.numpy()}")

    # Agents: a Runtime connects each agent and runs its handlers in the background.
    async with latentwire.Runtime().add(Doubler()), latentwire.connect(agent="carol") as carol:
        await carol.publish("notes/carol", "doubling a 2x2 latent next")
        reply = await carol.request("doubler", latent=np.ones((2, 2), np.float32), timeout=5)
        print(f"carol got {reply.latent} from {reply.sender}: {reply.latent.numpy().tolist()}")


if __name__ == "__main__":
    asyncio.run(main())
