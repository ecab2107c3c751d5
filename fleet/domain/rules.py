"""Validation rules for names, tags, lease requests and identifiers.

Each function returns the normalised value or raises ``InvalidInput`` naming
the field and what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fleet.domain.errors import InvalidInput

DONGLE_ID_RE = re.compile(r"^esp-[0-9a-f]{12}$")
BUSID_RE = re.compile(r"^[1-9][0-9]*-[1-9][0-9]*(\.[1-9][0-9]*)*$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,62}$")
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
_USER_RE = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")
MAX_CLIENTS = 16  # the grant command's schema allows no more
MAX_TAGS = 32


def dongle_id(value: str, field: str = "dongle_id") -> str:
    if not isinstance(value, str) or not DONGLE_ID_RE.match(value):
        raise InvalidInput(field, f"{value!r} is not a dongle id (esp- and 12 lowercase hex digits)")
    return value


def busid(value: str, field: str = "busid") -> str:
    if not isinstance(value, str) or len(value) > 31 or not BUSID_RE.match(value):
        raise InvalidInput(field, f"{value!r} is not a USB port path like 1-1 or 1-2.3")
    return value


def device_name(value: str, field: str = "name") -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidInput(
            field,
            f"{value!r} is not a valid device name: start with a letter, then up to 62 letters, "
            "digits, '.', '_' or '-'",
        )
    return value


def tag(value: str, field: str = "tag") -> str:
    if not isinstance(value, str) or not _TAG_RE.match(value):
        raise InvalidInput(
            field, f"{value!r} is not a valid tag: 1-32 lowercase letters, digits, '.', '_' or '-'"
        )
    return value


def tags(values: Sequence[str], field: str = "tags") -> list[str]:
    out = sorted({tag(v, f"{field}[{i}]") for i, v in enumerate(values)})
    if len(out) > MAX_TAGS:
        raise InvalidInput(field, f"at most {MAX_TAGS} tags per device")
    return out


def user_name(value: str, field: str = "name") -> str:
    if not isinstance(value, str) or not _USER_RE.match(value):
        raise InvalidInput(
            field, f"{value!r} is not a valid user name: 1-32 lowercase letters, digits, '.', '_' or '-'"
        )
    return value


def lease_duration(seconds: int | None, *, default_s: int, max_s: int, field: str = "duration_s") -> int:
    if seconds is None:
        return default_s
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidInput(field, "must be a whole number of seconds")
    if seconds < 1:
        raise InvalidInput(field, f"must be at least 1 second, got {seconds}")
    if seconds > max_s:
        raise InvalidInput(field, f"{seconds} s is longer than the maximum lease of {max_s} s")
    return seconds


def client_addresses(values: Sequence[str], field: str = "clients") -> list[str]:
    if not values:
        raise InvalidInput(field, "name at least one client IP address allowed to attach the device")
    if len(values) > MAX_CLIENTS:
        raise InvalidInput(field, f"at most {MAX_CLIENTS} client addresses, got {len(values)}")
    out: list[str] = []
    for i, v in enumerate(values):
        try:
            addr = str(ipaddress.ip_address(v))
        except ValueError:
            raise InvalidInput(f"{field}[{i}]", f"{v!r} is not an IPv4 or IPv6 address") from None
        if addr not in out:
            out.append(addr)
    return out


@dataclass(frozen=True, slots=True)
class Target:
    """What a lease request points at."""

    kind: Literal["id", "name", "tag"]
    value: str | int


def lease_target(value: str | int, field: str = "device") -> Target:
    """``42`` or ``"42"`` = device id, ``"tag:probe"`` = first free device tagged probe, else a name."""
    if isinstance(value, bool):
        raise InvalidInput(field, "must be a device name, id or tag:<tag>")
    if isinstance(value, int):
        if value < 1:
            raise InvalidInput(field, f"device id must be positive, got {value}")
        return Target("id", value)
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must be a device name, id or tag:<tag>")
    if value.startswith("tag:"):
        return Target("tag", tag(value[4:], field))
    if value.isdigit():
        return Target("id", int(value))
    return Target("name", device_name(value, field))


def usb_id(value: str | int, field: str) -> int:
    """A VID or PID given as hex text (``1366``, ``0x1366``) or an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        text = str(value).lower().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]{1,4}", text):
            raise InvalidInput(field, f"{value!r} is not a 16-bit hex USB id like 1366")
        n = int(text, 16)
    if not 0 <= n <= 0xFFFF:
        raise InvalidInput(field, f"{value!r} is out of range 0000-ffff")
    return n
