"""Broker URLs: ``mqtt://[user:pass@]host[:port]`` and ``mqtts://`` (TLS)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __str__(self) -> str:  # never shows the password
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse and check a broker URL; ``ValueError`` says which part is wrong.

    ``mqtts://`` verifies the server against the system CAs, or against the file
    given as ``?ca=/path/ca.pem``.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("broker URL is empty")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r}: host is missing")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r}: port must be 1-65535") from exc
    if port == 0:
        raise ValueError(f"broker URL {url!r}: port must be 1-65535")
    if parts.path not in ("", "/"):
        raise ValueError(f"broker URL {url!r}: unexpected path {parts.path!r}")
    query = parse_qs(parts.query, strict_parsing=False)
    unknown = set(query) - {"ca"}
    if unknown:
        raise ValueError(f"broker URL {url!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
    tls = parts.scheme == "mqtts"
    return BrokerUrl(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ca_file=query["ca"][0] if "ca" in query else None,
    )
