"""Vocabulary of the domain: states, roles and the rules that derive them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DongleStatus(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # seen only through mDNS, never spoke MQTT


class DeviceState(enum.StrEnum):
    FREE = "free"
    LEASED = "leased"
    ATTACHED = "attached"
    OFFLINE = "offline"
    QUARANTINED = "quarantined"


class LeaseState(enum.StrEnum):
    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    REVOKED = "revoked"


class CommandState(enum.StrEnum):
    SENT = "sent"  # handed to the MQTT client, no answer yet
    FAILED = "failed"  # could not be handed over; the scheduler re-sends it
    ACKED = "acked"  # the dongle answered ok
    REJECTED = "rejected"  # the dongle answered with an error


class Role(enum.StrEnum):
    ADMIN = "admin"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: an authenticated user, or the service itself."""

    user_id: int | None
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


SYSTEM = Principal(user_id=None, name="system", role=Role.ADMIN)
SCHEDULER = Principal(user_id=None, name="scheduler", role=Role.ADMIN)


def derive_device_state(
    *, quarantined: bool, present: bool, dongle_online: bool, attached: bool, leased: bool
) -> DeviceState:
    """One device state from the facts we store separately.

    Keeping the facts apart (rather than only the state) is what lets a device
    return to ``leased`` or ``attached`` when its dongle comes back online.
    Quarantine wins over everything because an admin asked for it; a device we
    cannot reach is offline even if a lease still names it.
    """
    if quarantined:
        return DeviceState.QUARANTINED
    if not present or not dongle_online:
        return DeviceState.OFFLINE
    if attached:
        return DeviceState.ATTACHED
    if leased:
        return DeviceState.LEASED
    return DeviceState.FREE
