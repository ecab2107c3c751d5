"""Request bodies. Unknown fields are rejected so typos do not pass silently."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LeaseRequest(Body):
    device: StrictInt | str = Field(
        description="device name, id, or tag:<tag> for the first free device so tagged"
    )
    duration_s: StrictInt | None = Field(
        default=None, description="seconds; default and maximum are configured"
    )
    clients: list[str] = Field(min_length=1, description="IP addresses allowed to attach the device")


class LeaseExtend(Body):
    duration_s: StrictInt = Field(description="seconds added to the current expiry")


class LeaseRevoke(Body):
    reason: str = Field(min_length=1, max_length=200)


class DevicePatch(Body):
    name: str | None = Field(default=None, description="new name; null removes the name")
    tags: list[str] | None = Field(default=None, description="replaces all tags")
    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)


class Quarantine(Body):
    quarantined: bool = True
    reason: str | None = Field(default=None, max_length=200)


class UserCreate(Body):
    name: str
    role: str = "user"


class TokenRevoke(Body):
    token: str = Field(description="the token itself or its numeric id")


class OtaRequest(Body):
    firmware_id: StrictInt | None = Field(default=None, description="a registered image's id")
    version: str | None = Field(default=None, description="or its version, for the dongle's chip")
    allow_downgrade: bool = Field(default=False, description="also install an older or the same version")


class RebootRequest(Body):
    reason: str | None = Field(default=None, max_length=128, description="why; the dongle logs it")


class PortPowerRequest(Body):
    action: Literal["on", "off", "cycle"] = Field(default="cycle", description="cycle = off, then on again")


class ConfigRequest(Body):
    """A dongle's config without v/request_id/issued_at/version; what is left out is
    kept from the last config the dongle was sent (else the defaults). The values are
    checked against the cmd-config contract, which names the offending field."""

    telemetry_interval_s: Any = Field(default=None, description="1..3600 seconds")
    enforce_grants: Any = Field(default=None, description="refuse imports without a grant")
    log_level: Any = Field(default=None, description="error, warn, info or debug")
    filters: Any = Field(
        default=None, description='{"allow": [...], "deny": [...]}, entries {"vid","pid"} or {"class"}'
    )
    mqtt: Any = Field(default=None, description='{"url", "username", "password"}; null removes a key')
