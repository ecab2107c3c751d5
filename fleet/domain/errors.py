"""Errors the service layer raises; adapters translate them at their boundary.

FleetError                 base: ``code`` + human ``message`` (+ ``extra`` fields)
├── InvalidInput           a field or argument is malformed       -> HTTP 422, CLI exit 2
├── NotFound               the named thing does not exist         -> HTTP 404
├── Conflict               the state forbids it (lease held ...)  -> HTTP 409
├── AuthenticationError    no or unknown token                    -> HTTP 401
├── PermissionDenied       the role may not do it                 -> HTTP 403
├── ConfigError            settings are invalid                   -> exit 2 at start-up
└── TransportError         a command could not be handed to MQTT  -> recorded, retried
"""

from __future__ import annotations

from typing import Any


class FleetError(Exception):
    code = "error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidInput(FleetError):
    code = "invalid_input"

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(f"{field}: {message}", field=field, **extra)
        self.field = field


class NotFound(FleetError):
    code = "not_found"


class Conflict(FleetError):
    code = "conflict"


class AuthenticationError(FleetError):
    code = "unauthenticated"


class PermissionDenied(FleetError):
    code = "forbidden"


class ConfigError(FleetError):
    code = "config_error"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class TransportError(FleetError):
    code = "transport_error"
