"""Topic routing: which sessions' filters match a topic, in time proportional to its depth."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class _Node(Generic[K]):
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K]] = {}
        self.subscribers: set[K] = set()


class TopicTree(Generic[K]):
    """A trie of subscription filters (``+`` one level, ``#`` the rest) to subscriber keys."""

    def __init__(self) -> None:
        self._root: _Node[K] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: str, key: K) -> bool:
        """Subscribe ``key`` to a (validated) filter; False if it already was."""
        node = self._root
        for level in pattern.split("/"):
            node = node.children.setdefault(level, _Node())
        if key in node.subscribers:
            return False
        node.subscribers.add(key)
        self._count += 1
        return True

    def remove(self, pattern: str, key: K) -> bool:
        """Unsubscribe ``key`` from a filter; False if it was not subscribed. Prunes empty nodes."""
        path = [self._root]
        for level in pattern.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if key not in path[-1].subscribers:
            return False
        path[-1].subscribers.discard(key)
        self._count -= 1
        for parent, level, node in zip(reversed(path[:-1]), reversed(pattern.split("/")),
                                       reversed(path[1:])):
            if node.subscribers or node.children:
                break
            del parent.children[level]
        return True

    def match(self, topic: str) -> set[K]:
        """Every key with a filter that matches ``topic``."""
        found: set[K] = set()
        levels = topic.split("/")
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            hash_node = node.children.get("#")
            if hash_node is not None:
                found |= hash_node.subscribers  # '#' also matches the parent level itself
            if depth == len(levels):
                found |= node.subscribers
                continue
            for key in (levels[depth], "+"):
                child = node.children.get(key)
                if child is not None:
                    stack.append((child, depth + 1))
        return found
