"""One exception for everything the CLI reports to the user."""

from __future__ import annotations

# Exit statuses a script can tell apart.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LEASE_ENDED = 3  # the lease was revoked or expired under us
EXIT_BUSY = 4  # the device is leased by someone else
EXIT_UNREACHABLE = 5  # the server could not be reached
EXIT_AUTH = 6  # the token was rejected


class ClientError(Exception):
    """A failure with a message meant for a person, and the fix when we know it."""

    def __init__(self, message: str, *, fix: str | None = None, exit_code: int = EXIT_ERROR, **extra: object):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.exit_code = exit_code
        self.extra = extra

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"
