"""MQTT-style topic names and filters, shared by every transport and the hub.

A topic is ``/``-separated levels (``robots/arm1/camera``). A filter may use ``+`` for
exactly one level and ``#`` (last level only) for zero or more remaining levels.
"""

from __future__ import annotations

import re

from .errors import ConfigError, InvalidTopic

MAX_TOPIC_LENGTH = 1024
# What an agent id may be, on every transport and in the hub (a hub, a broker and the SDK must agree).
AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
# What a subscription group may be called: a name every transport carries as is (an MQTT
# share name has no '/', '+', '#'; a NATS consumer name no '.', '*', '>', whitespace).
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _check_common(topic: object) -> str:
    if not isinstance(topic, str):
        raise InvalidTopic(repr(topic), f"must be a str, not {type(topic).__name__}")
    if not topic:
        raise InvalidTopic(topic, "must not be empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidTopic(topic[:40] + "...", f"longer than {MAX_TOPIC_LENGTH} characters")
    if "\x00" in topic:
        raise InvalidTopic(topic, "contains a NUL character")
    if topic.startswith("$"):
        raise InvalidTopic(topic, "topics starting with '$' are reserved")
    return topic


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic to publish to, else raise `InvalidTopic`."""
    name = _check_common(topic)
    for level in name.split("/"):
        if not level:
            raise InvalidTopic(name, "empty level (leading, trailing or double '/')")
        if "+" in level or "#" in level:
            raise InvalidTopic(name, "wildcards '+' and '#' are only allowed in subscriptions")
    return name


def validate_filter(pattern: object) -> str:
    """Return ``pattern`` if it is a valid subscription filter, else raise `InvalidTopic`."""
    name = _check_common(pattern)
    levels = name.split("/")
    for i, level in enumerate(levels):
        if not level:
            raise InvalidTopic(name, "empty level (leading, trailing or double '/')")
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise InvalidTopic(name, "'#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise InvalidTopic(name, "'+' must be a whole level")
    return name


def validate_group(group: object) -> str:
    """Return ``group`` if it is a valid subscription group name, else raise `ConfigError`."""
    if not isinstance(group, str) or not GROUP_NAME.fullmatch(group):
        raise ConfigError(f"invalid subscription group {group!r}: use 1-64 of A-Z a-z 0-9 _ -, "
                          "starting with a letter or digit (e.g. group='workers')")
    return group


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches the (valid) filter ``pattern``."""
    if pattern == topic or pattern == "#":
        return True
    p_levels = pattern.split("/")
    t_levels = topic.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels):
            return False
        if p != "+" and p != t_levels[i]:
            return False
    return len(p_levels) == len(t_levels)
