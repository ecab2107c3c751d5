"""MQTT topic names and filters: validation and matching (MQTT 3.1.1 §4.7)."""

from __future__ import annotations

MAX_TOPIC_BYTES = 65535


def valid_topic_name(topic: str) -> bool:
    """A name a client may publish to: non-empty, no wildcards, no NUL."""
    return bool(topic) and "+" not in topic and "#" not in topic and "\x00" not in topic


def valid_topic_filter(flt: str) -> bool:
    if not flt or "\x00" in flt:
        return False
    levels = flt.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def split_shared(flt: str) -> tuple[str | None, str]:
    """``$share/<group>/<filter>`` -> (group, filter); anything else -> (None, flt).

    Raises ValueError for a malformed shared subscription.
    """
    if not flt.startswith("$share/"):
        return None, flt
    parts = flt.split("/", 2)
    if len(parts) != 3 or not parts[1] or "+" in parts[1] or "#" in parts[1] or not parts[2]:
        raise ValueError(f"malformed shared subscription {flt!r}")
    return parts[1], parts[2]


def matches(flt: str, topic: str) -> bool:
    """True when ``topic`` matches ``flt``.

    Topics starting with ``$`` are never matched by a filter whose first level
    is a wildcard, so ``#`` does not leak broker-internal topics.
    """
    if topic.startswith("$") and flt[:1] in ("+", "#"):
        return False
    f_levels = flt.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
