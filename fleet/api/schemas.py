"""Request bodies. Unknown fields are rejected so typos do not pass silently."""

from __future__ import annotations

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
